"""A small LLaMA-style decoder: RMSNorm, rotary position embeddings, SwiGLU, causal attention.

Sized by ``layers`` and ``d_model``; heads have at most 64 dimensions (``n_heads = ceil(d/64)``
unless given) and the SwiGLU hidden width is 8/3 · d rounded up to a multiple of 8.  Every GEMM
of the blocks is an ``nn.Linear`` (so :func:`explorer.train.qlinear.quantize_model` can swap
them); the classifier is ``model.head``.

``N`` (the parameter count of the scaling laws) is counted as Sun et al. do: the non-embedding
GEMM weights of the transformer blocks (attention q, k, v, o and the three SwiGLU matrices);
embeddings, the classifier and the norm gains are not counted.  See :func:`param_count`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder.

    layers: number of transformer blocks (>= 1).
    d_model: residual width (>= 8, divisible by the number of heads).
    vocab_size: number of token ids (256 for byte-level tokens).
    n_heads: attention heads; None -> ceil(d_model / 64) (head dimension <= 64).
    ffn_hidden: SwiGLU hidden width; None -> 8/3 * d_model rounded up to a multiple of 8.
    max_seq_len: longest sequence the rotary tables cover.
    """

    layers: int
    d_model: int
    vocab_size: int = 256
    n_heads: int | None = None
    ffn_hidden: int | None = None
    max_seq_len: int = 1024

    def __post_init__(self) -> None:
        for name, low, optional in (("layers", 1, False), ("d_model", 8, False),
                                    ("vocab_size", 2, False), ("n_heads", 1, True),
                                    ("ffn_hidden", 1, True), ("max_seq_len", 1, False)):
            v = getattr(self, name)
            if optional and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}"
                                 + (" or None" if optional else "") + f", got {v!r}")
        heads = self.heads
        if self.d_model % heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={heads}")
        if (self.d_model // heads) % 2:
            raise ValueError(f"head dimension d_model/n_heads={self.d_model // heads} must be even "
                             "(rotary embeddings rotate pairs)")

    @property
    def heads(self) -> int:
        """Number of attention heads actually used."""
        return self.n_heads if self.n_heads is not None else max(1, math.ceil(self.d_model / 64))

    @property
    def hidden(self) -> int:
        """SwiGLU hidden width actually used."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return int(math.ceil(8 * self.d_model / 3 / 8) * 8)


def param_count(cfg: ModelConfig) -> int:
    """N as in Sun et al.: non-embedding GEMM weights, ``layers * (4 d^2 + 3 d h)``.

    Embedding, classifier and RMSNorm gains are excluded.  Equal to
    ``sum(p.numel() for the block Linear weights)`` of :class:`Decoder` (tested).
    """
    d, h = cfg.d_model, cfg.hidden
    return cfg.layers * (4 * d * d + 3 * d * h)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def _rope_tables(seq_len: int, head_dim: int,
                 base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., 2i], x[..., 2i+1]) of ``x`` (batch, heads, seq, head_dim)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary embeddings (``F.scaled_dot_product_attention``).

    ``qk_quant`` (set by :func:`explorer.train.qlinear.quantize_model` when asked) is a callable
    applied to q, k and v before the attention products; None leaves them unquantized.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.d_model // cfg.heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.o = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.qk_quant = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q = self.q(x).view(shape).transpose(1, 2)
        k = self.k(x).view(shape).transpose(1, 2)
        v = self.v(x).view(shape).transpose(1, 2)
        q, k = apply_rope(q, cos[:t], sin[:t]), apply_rope(k, cos[:t], sin[:t])
        if self.qk_quant is not None:
            q, k, v = self.qk_quant(q), self.qk_quant(k), self.qk_quant(v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.up = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.down = nn.Linear(cfg.hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Decoder(nn.Module):
    """The language model: token embedding, ``layers`` blocks, final RMSNorm, linear classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = _rope_tables(cfg.max_seq_len, cfg.d_model // cfg.heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights; residual output projections scaled by 1/sqrt(2 layers)."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            std = 0.02
            if name.endswith("attn.o.weight") or name.endswith("mlp.down.weight"):
                std = 0.02 / math.sqrt(2 * self.cfg.layers)
            nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, seq, vocab) for integer ``tokens`` (batch, seq)."""
        if tokens.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds "
                             f"max_seq_len={self.cfg.max_seq_len}")
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, self.rope_cos, self.rope_sin)
        return self.head(self.norm(x))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats."""
        logits = self(tokens)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def gemm_weights(self) -> list[torch.Tensor]:
        """The weights counted in N (block Linear layers), in a fixed order."""
        return [m.weight for blk in self.blocks for m in blk.modules() if isinstance(m, nn.Linear)]
