"""Training prompts worded by a phrase file (``--train-phrases``): the sampler's wording, the
unchanged template stream without phrases, and the CLI's refusal to train on evaluation phrasings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from steer_train.cli import main
from steer_train.data import Dataset, Item
from steer_train.prompts import TRAIN_COMPOUND, TRAIN_NEG, TRAIN_POS, Phrases, fill
from steer_train.train import PromptSampler, Samples

VOCAB = ["comedy", "horror", "sci-fi"]
PHRASES = Phrases({"comedy": ["make me laugh", "something funny"], "horror": ["something scary"]},
                  {"comedy": ["nothing funny"], "horror": ["nothing scary"]})  # fmt: skip


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _sampler(phrases: Phrases | None, prob: float) -> PromptSampler:
    tags = [["comedy"], ["horror"], ["sci-fi"], ["comedy", "horror"]]
    ds = Dataset("t", [Item(i, f"T{i}", t) for i, t in enumerate(tags)], [0], [[0, 1]], list(VOCAB))
    n = 8
    smp = Samples(
        h=torch.zeros(n, 4),
        target=torch.tensor([0, 1, 2, 3] * 2),
        hist=torch.ones(n, 3),  # every tag seen: negative prompts can name any tag the target lacks
        recent=torch.zeros(n, 3),
    )
    return PromptSampler(ds, VOCAB, smp, seed=5, phrases=phrases, phrase_prob=prob)


def _draw(s: PromptSampler, kind: str, n: int = 200) -> list[str]:
    idx = torch.arange(8).repeat(n // 8)
    prompts, _ = s.prompts(kind, idx)
    return [p or "" for p in prompts]


def test_without_phrases_the_template_stream_is_unchanged() -> None:
    for kind in ("pos", "neg", "compound"):
        base = _draw(_sampler(None, 0.5), kind)
        assert _draw(_sampler(PHRASES, 0.0), kind) == base
        assert all(any(p == fill(t, a, b) for t in (TRAIN_POS + TRAIN_NEG + TRAIN_COMPOUND)
                       for a in ["", *VOCAB] for b in ["", *VOCAB]) for p in base)  # fmt: skip


def test_phrases_word_the_clauses() -> None:
    every = set(PHRASES.all())
    pos = _draw(_sampler(PHRASES, 1.0), "pos")
    # comedy and horror have phrases: always used; sci-fi has none: a template
    assert {p for p in pos if p in every} == {"make me laugh", "something funny", "something scary"}
    assert all(p in every or "sci-fi" in p for p in pos)
    neg = _draw(_sampler(PHRASES, 1.0), "neg")
    assert {p for p in neg if p in every} == {"nothing funny", "nothing scary"}
    comp = _draw(_sampler(PHRASES, 1.0), "compound")
    joined = [p for p in comp if ", nothing " in p]
    assert joined and all(p.split(", ")[0] in every or "sci-fi" in p.split(", ")[0] for p in joined)
    half = _draw(_sampler(PHRASES, 0.5), "pos", n=400)
    share = sum(p in every for p in half) / len(half)
    assert 0.2 < share < 0.5  # half of the comedy/horror clauses (3/4 of the targets carry one)


def test_cli_refuses_training_on_the_evaluation_phrasings(tmp_path: Path) -> None:
    from steer_train.synth import SynthConfig, generate, write_generic

    inter, items = write_generic(generate(SynthConfig(seed=2, n_users=40, n_items=30)), tmp_path)
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"positive": {"comedy": ["make me laugh"]}}))
    with pytest.raises(SystemExit, match="share phrasings"):
        main(["--no-progress", "run", "--dataset", f"generic:{inter},{items}", "--d", "16", "--epochs1", "1",
              "--threads", "1", "--train-phrases", str(f), "--prompts", str(f)])  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(SystemExit, match=r"bad\.json: expected a JSON object"):
        main(["--no-progress", "train", "--dataset", f"generic:{inter},{items}", "--d", "16", "--epochs1",
              "1", "--threads", "1", "--train-phrases", str(bad), "--out", str(tmp_path / "c")])  # fmt: skip


def test_carriers_wrap_positive_phrases_and_keep_their_polarity() -> None:
    from steer_train.clauses import parse
    from steer_train.prompts import CARRIERS, EVAL_POS, TRAINVAL_PHRASES, load_phrases

    s = _sampler(PHRASES, 1.0)
    s.carrier_prob = 1.0
    pos = _draw(s, "pos")
    wrapped = [p for p in pos if "sci-fi" not in p]
    assert wrapped and all(
        any(
            c.format(p=x) == p
            for c in CARRIERS
            for x in PHRASES.positive["comedy"] + PHRASES.positive["horror"]
        )
        for p in wrapped
    )
    neg = _draw(s, "neg")  # negative phrases are never wrapped
    assert {p for p in neg if "sci-fi" not in p} <= {"nothing funny", "nothing scary"}
    assert not set(CARRIERS) & set(EVAL_POS)
    for group in load_phrases(TRAINVAL_PHRASES).positive.values():
        for p in group:
            for c in CARRIERS:
                cl = parse(c.format(p=p))
                assert cl and all(x.polarity == "+" for x in cl), (c, p)
