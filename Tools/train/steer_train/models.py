"""Backbones (SASRec, GRU4Rec) and the DPR head (projection, fusion, polarity-grouped MoE).

Token convention: item row ``r`` (0-based, the row of ``items``) is token ``r + 1``; token 0 is
padding. Sequences are **left-padded** to ``max_len`` so the most recent item is always at position
``max_len - 1``. The exact forward computation is specified in docs/checkpoint-format.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PROMPT_DIM = 384
LN_EPS = 1e-5


@dataclass
class ModelConfig:
    backbone: str = "sasrec"  # "sasrec" | "gru4rec"
    n_items: int = 0
    d: int = 64
    max_len: int = 50
    n_layers: int = 2
    n_heads: int = 1
    d_ff: int = 64
    dropout: float = 0.2
    fusion_hidden: int = 128
    n_experts: int = 4
    expert_hidden: int = 128
    #: extra scoring dimensions that only prompts use (0 = none)
    d_aux: int = 16
    prompt_dim: int = PROMPT_DIM

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- backbones


class Backbone(nn.Module):
    cfg: ModelConfig
    item_emb: nn.Embedding
    #: ``[n_items, d_aux]`` extra item dimensions only prompts can reach (the user vector is 0 there)
    aux_emb: nn.Parameter | None

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.d_aux > 0:
            g = torch.Generator().manual_seed(12345)  # own stream: the backbone's init is unchanged
            self.aux_emb = nn.Parameter(torch.randn(cfg.n_items, cfg.d_aux, generator=g) * 0.1)
        else:
            self.register_parameter("aux_emb", None)

    def encode_all(self, seqs: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded tokens → ``[B, L, d]`` hidden states (position ``t`` sees
        tokens ``<= t``)."""
        raise NotImplementedError

    def user_vector(self, seqs: torch.Tensor) -> torch.Tensor:
        """``h``: the hidden state at the last position; zeros for an all-padding row."""
        h = self.encode_all(seqs)[:, -1]
        empty = (seqs > 0).sum(1) == 0
        return torch.where(empty[:, None], torch.zeros_like(h), h)

    def item_table(self) -> torch.Tensor:
        """``V`` ``[n_items, d + d_aux]``: the scoring table (the vectors the server indexes) =
        the backbone's item table followed by the prompt-only dimensions."""
        if self.aux_emb is None:
            return self.base_table()
        return torch.cat([self.base_table(), self.aux_emb], dim=1)

    def base_table(self) -> torch.Tensor:
        """``E`` ``[n_items, d]``: the backbone's input and (plain) scoring table."""
        return self.item_emb.weight[1:]

    def pad(self, h: torch.Tensor) -> torch.Tensor:
        """``[h ; 0]``: a user vector in scoring space."""
        if self.cfg.d_aux <= 0:
            return h
        return torch.cat([h, h.new_zeros(h.shape[0], self.cfg.d_aux)], dim=1)


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
        self.fc1 = nn.Linear(d, d_ff)
        self.fc2 = nn.Linear(d_ff, d)
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.n_heads
        y = self.ln1(x)

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.n_heads, hd).transpose(1, 2)

        att = F.scaled_dot_product_attention(
            heads(self.q(y)),
            heads(self.k(y)),
            heads(self.v(y)),
            attn_mask=allowed[:, None],
            dropout_p=self.p if self.training else 0.0,
        )
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.fc2(self.drop(F.relu(self.fc1(self.ln2(x))))))
        return x


class SASRec(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d)
        self.blocks = nn.ModuleList(
            Block(cfg.d, cfg.n_heads, cfg.d_ff, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.final_ln = nn.LayerNorm(cfg.d, eps=LN_EPS)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode_all(self, seqs: torch.Tensor) -> torch.Tensor:
        _b, t = seqs.shape
        pos = torch.arange(t, device=seqs.device) + (self.cfg.max_len - t)
        x = self.item_emb(seqs) * math.sqrt(self.cfg.d) + self.pos_emb(pos)[None]
        x = self.drop(x)
        real = seqs > 0
        causal = torch.ones(t, t, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(t, dtype=torch.bool, device=seqs.device)
        allowed = (causal[None] & real[:, None, :]) | eye[None]
        for blk in self.blocks:
            x = blk(x, allowed)
        out: torch.Tensor = self.final_ln(x)
        return out


class GRU4Rec(Backbone):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.d, padding_idx=0)
        self.gru = nn.GRU(cfg.d, cfg.d, num_layers=1, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode_all(self, seqs: torch.Tensor) -> torch.Tensor:
        _b, t = seqs.shape
        lengths = (seqs > 0).sum(1).clamp(min=1)
        ar = torch.arange(t, device=seqs.device)[None]
        shift = (t - lengths)[:, None]
        right = torch.gather(seqs, 1, (ar + shift) % t)  # right-padded copy
        x = self.drop(self.item_emb(right))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=t)
        idx = ((ar - shift) % t)[:, :, None].expand(-1, -1, padded.shape[2])
        left: torch.Tensor = torch.gather(padded, 1, idx)
        return left


def make_backbone(cfg: ModelConfig) -> Backbone:
    if cfg.backbone == "sasrec":
        return SASRec(cfg)
    if cfg.backbone == "gru4rec":
        return GRU4Rec(cfg)
    raise ValueError(f"unknown backbone {cfg.backbone!r}")


# ---------------------------------------------------------------------------- DPR head


class MLP2(nn.Module):
    """``fc2(relu(fc1(x)))``."""

    def __init__(self, d_in: int, hidden: int, d_out: int, out_std: float | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        if out_std is not None:
            nn.init.normal_(self.fc2.weight, std=out_std)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc2(F.relu(self.fc1(x)))
        return y


class ExpertGroup(nn.Module):
    """``Δ = Σ_k softmax(gate(f))_k · E_k(f)``."""

    def __init__(self, d: int, n_experts: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d, n_experts)
        self.experts = nn.ModuleList(MLP2(d, hidden, d_out, out_std=0.01) for _ in range(n_experts))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        g = torch.softmax(self.gate(f), dim=-1)  # [C, K]
        e = torch.stack([ex(f) for ex in self.experts], dim=1)  # [C, K, d]
        return (g[:, :, None] * e).sum(1)


class DPRHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d
        self.proj = nn.Linear(cfg.prompt_dim, d)
        self.fusion = MLP2(3 * d, cfg.fusion_hidden, d)
        self.d_out = d + max(cfg.d_aux, 0)
        self.pos = ExpertGroup(d, cfg.n_experts, cfg.expert_hidden, self.d_out)
        self.neg = ExpertGroup(d, cfg.n_experts, cfg.expert_hidden, self.d_out)

    def deltas(self, h: torch.Tensor, e: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Per clause: ``h`` ``[C, d]`` (the user vector of the clause's query), ``e`` ``[C, 384]``
        clause embeddings, ``negative`` ``[C]`` bool → ``Δ`` ``[C, d + d_aux]``."""
        z = self.proj(e)
        f = self.fusion(torch.cat([h, z, h * z], dim=-1))
        out = h.new_zeros(h.shape[0], self.d_out)
        neg = negative.bool()
        if bool((~neg).any()):
            out[~neg] = self.pos(f[~neg])
        if bool(neg.any()):
            out[neg] = self.neg(f[neg])
        return out

    def query(
        self,
        h: torch.Tensor,
        e: torch.Tensor,
        negative: torch.Tensor,
        owner: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``q = [h ; 0] + λ · Σ_c Δ_c`` where clause ``c`` belongs to query ``owner[c]`` and
        ``λ = scale`` (the soft scale; 1 is the checkpoint's forward computation)."""
        hp = (
            h
            if self.d_out == h.shape[1]
            else torch.cat([h, h.new_zeros(h.shape[0], self.d_out - h.shape[1])], 1)
        )
        if e.shape[0] == 0:
            return hp
        d = self.deltas(h[owner], e, negative)
        return hp.index_add(0, owner, d if scale == 1.0 else scale * d)


@dataclass
class DPR:
    """A trained model: backbone + head + its configuration."""

    cfg: ModelConfig
    backbone: Backbone
    head: DPRHead
    tags: list[str] = field(default_factory=list)
    #: λ: the soft mode's query is ``[h ; 0] + λ · Σ Δ`` (tuned on validation, ``steering.json``)
    soft_scale: float = 1.0
    #: β: hybrid ranks the mapped filter's items by ``β · soft + (1 − β) · backbone`` (β = 0: the
    #: filter; β = 1: soft inside the filter, the checkpoint's hybrid mode)
    hybrid_blend: float = 1.0

    @classmethod
    def create(cls, cfg: ModelConfig, seed: int) -> DPR:
        torch.manual_seed(seed)
        bb = make_backbone(cfg)
        head = DPRHead(cfg)
        return cls(cfg, bb, head)

    def eval(self) -> None:
        self.backbone.eval()
        self.head.eval()
