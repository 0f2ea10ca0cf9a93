from __future__ import annotations

import pytest
import torch

from steer_train.minilm import shared_encoder

GOLDEN = [
    ("more comedies", [101, 2062, 22092, 102],
     [0.007315, -0.108954, 0.012962, -0.007446, -0.015822, 0.020178]),
    ("no horror, please", [101, 2053, 5469, 1010, 3531, 102],
     [-0.049255, 0.060981, -0.025249, 0.011183, -0.020148, -0.050939]),
    ("Café déjà vu: Sci-Fi & Fantasy!!",
     [101, 7668, 2139, 3900, 24728, 1024, 16596, 1011, 10882, 1004, 5913, 999, 999, 102],
     [-0.018103, -0.044808, 0.048011, 0.057469, 0.028168, 0.046002]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "ids", "dims"), GOLDEN)
def test_golden(text: str, ids: list[int], dims: list[float]) -> None:
    enc = shared_encoder()
    assert enc.tokenizer.encode(text) == ids
    e = enc.encode([text])[0]
    assert torch.allclose(e[:6], torch.tensor(dims), atol=1e-5)
    assert abs(float(e.norm()) - 1.0) < 1e-5


def test_batching_does_not_change_embeddings() -> None:
    enc = shared_encoder()
    texts = [g[0] for g in GOLDEN] + ["a much longer sentence about dark comedy and twist endings"]
    together = enc.encode(texts)
    enc._cache.clear()
    alone = torch.cat([enc.encode([t]) for t in texts])
    assert torch.allclose(together, alone, atol=1e-6)


def test_tokenizer_edge_cases() -> None:
    tok = shared_encoder().tokenizer
    assert tok.encode("") == [101, 102]
    assert tok.encode("x" * 101) == [101, tok.unk_id, 102]
    assert len(tok.encode("word " * 400)) == 256
