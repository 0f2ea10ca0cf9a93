"""PyTorch CPU reference timings for Benchmarks/encode/run.sh: the same checkpoint, history and prompt
as the Swift run, stage by stage (tokenize, MiniLM, backbone, head), plus sentence-transformers'
`encode` of the prompt when the package is importable.

Usage: python torch_reference.py CHECKPOINT MINILM_DIR PROMPT REPEAT HISTORY_ID...
Prints one JSON object. Uses steer_train (Tools/train) for the model and the MiniLM forward.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch
from steer_train.clauses import parse
from steer_train.export import load_checkpoint
from steer_train.minilm import MiniLM
from steer_train.train import pad_left


def summary(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, round((len(s) - 1) * p))] / 1000, 1)

    return {
        "p50": pct(0.5),
        "p90": pct(0.9),
        "p99": pct(0.99),
        "mean": round(statistics.mean(s) / 1000, 1),
    }


@torch.no_grad()
def main() -> None:
    ckpt, minilm_dir, prompt, repeat = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
    )
    history_ids = [int(x) if x.lstrip("-").isdigit() else x for x in sys.argv[5:]]
    model, items = load_checkpoint(ckpt)
    row = {it.id: r for r, it in enumerate(items)}
    hist = [row[i] for i in history_ids if i in row]
    enc = MiniLM(minilm_dir)
    clauses = parse(prompt)
    texts = [c.text for c in clauses]
    negative = torch.tensor([c.polarity == "-" for c in clauses], dtype=torch.bool)
    owner = torch.zeros(len(clauses), dtype=torch.long)
    stages: dict[str, list[int]] = {
        k: [] for k in ("parse", "tokenize", "minilm", "backbone", "head", "total")
    }
    q = None
    for _ in range(repeat + 5):
        t0 = time.perf_counter_ns()
        cl = parse(prompt)
        t1 = time.perf_counter_ns()
        ids = [enc.tokenizer.encode(c.text) for c in cl]
        t2 = time.perf_counter_ns()
        emb = enc._forward(ids)  # uncached: the memo in MiniLM.encode is bypassed
        t3 = time.perf_counter_ns()
        h = model.backbone.user_vector(pad_left([hist], model.cfg.max_len))
        t4 = time.perf_counter_ns()
        q = model.head.query(h, emb, negative, owner)
        t5 = time.perf_counter_ns()
        for k, v in zip(
            stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True
        ):
            v_list = stages[k]
            v_list.append(v)
    out: dict[str, object] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clauses": texts,
        "latency_us": {k: summary(v[5:]) for k, v in stages.items()},
        "query_head": [float(x) for x in q[0][:4]] if q is not None else [],
    }
    # MiniLM alone on the whole prompt (the `embed-text` comparison)
    ids = enc.tokenizer.encode(prompt)
    mini: list[int] = []
    for _ in range(repeat + 5):
        t0 = time.perf_counter_ns()
        enc._forward([enc.tokenizer.encode(prompt)])
        mini.append(time.perf_counter_ns() - t0)
    out["minilm_prompt_us"] = summary(mini[5:])
    out["prompt_tokens"] = len(ids)
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(minilm_dir, device="cpu")
        samples: list[int] = []
        for _ in range(repeat + 5):
            t0 = time.perf_counter_ns()
            st.encode(prompt, convert_to_numpy=True, normalize_embeddings=True)
            samples.append(time.perf_counter_ns() - t0)
        import sentence_transformers

        out["sentence_transformers"] = {
            "version": sentence_transformers.__version__,
            "encode_us": summary(samples[5:]),
        }
    except Exception as exc:
        out["sentence_transformers"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
