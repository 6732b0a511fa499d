"""timm's self-attention traced with its heads visible: within `heads_visible(model)` every
eligible `timm.layers.Attention` (no q/k norm, no output gate or norm) runs `qkv`, then one
`heads_attention` call (an fx leaf function: the reshape into heads, scaled-dot-product
attention, the reshape back), then `proj`. The analysis then sees qkv as a writer whose
channels go by head (`channel_rules.HeadsRule` links each head's q, k and v channels into one
structure) and proj as a writer reading the heads; surgery passes the kept number of heads.
Attention modules that are not eligible stay one leaf (`channel_rules.AttentionRule`)."""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

ATTENTION = "timm.layers.attention.Attention"


def heads_attention(qkv: torch.Tensor, num_heads: int, head_dim: int, scale: float) -> torch.Tensor:
    """[B, N, 3 * H * D] (q, k, v, each head by head) -> [B, N, H * D]: softmax(q k^T *
    scale) v per head, as timm's Attention computes it."""
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    x = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return x.transpose(1, 2).reshape(b, n, num_heads * head_dim)


fx.wrap("heads_attention")


def _forward(self, x: torch.Tensor, attn_mask=None, is_causal=False) -> torch.Tensor:
    """timm's Attention.forward without mask, causality, q/k norms, gate or inner norm."""
    x = heads_attention(self.qkv(x), self.num_heads, self.head_dim, self.scale)
    return self.proj_drop(self.proj(x))


def eligible(m: nn.Module) -> bool:
    """Whether `m` is a timm Attention whose forward `_forward` computes exactly."""
    t = type(m)
    return (
        f"{t.__module__}.{t.__qualname__}" == ATTENTION
        and isinstance(m.q_norm, nn.Identity)
        and isinstance(m.k_norm, nn.Identity)
        and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity)
        and getattr(m, "gate", None) is None
        and m.attn_dim == m.num_heads * m.head_dim
    )


@contextmanager
def heads_visible(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Within: every eligible attention module of `model` runs `_forward` (yielded: those)."""
    chosen = [m for m in model.modules() if eligible(m)]
    for m in chosen:
        m.forward = types.MethodType(_forward, m)
    try:
        yield chosen
    finally:
        for m in chosen:
            del m.forward  # the class's again
