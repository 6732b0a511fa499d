"""What a pruning method is and what it may use. Method modules (here and in `baselines/`)
import only this module (and the computations they build on); `sosp.methods.registry` lists
them.

A method maps a `Context` to a `Saliency`: per-structure `scores` (prune the smallest) or the
SOSP-I matrix `q` (greedy Eq. 4). Selection, surgery and counting are shared by all methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sosp.curvature import Batch
from sosp.selection import Saliency
from sosp.structures import Layer, StructureGraph

Method = Callable[..., Saliency]  # method(ctx, **options) -> Saliency

__all__ = ["Batch", "Context", "Method", "Saliency", "generator", "per_layer_scores"]


@dataclass
class Context:
    """Everything a method may use. `batches` is a list (read more than once) holding exactly
    the N' pruning samples."""

    model: nn.Module
    graph: StructureGraph
    batches: list[Batch]
    loss: str
    n_samples: int
    seed: int = 0
    progress: bool = False


def generator(ctx: Context) -> torch.Generator:
    """A CPU generator seeded by `ctx.seed`: the only source of randomness a method may use."""
    return torch.Generator().manual_seed(ctx.seed)


def per_layer_scores(ctx: Context, score: Callable[[Layer], torch.Tensor]) -> Saliency:
    """Saliency from `score(layer)` [out_channels] of every prunable layer, in structure order."""
    graph = ctx.graph
    parts = [score(layer).detach().flatten() for layer in graph.layers.values() if layer.prunable]
    for part, (name, idx) in zip(parts, graph.layer_structures().items(), strict=True):
        if len(part) != len(idx):
            raise ValueError(f"score of {name!r} has {len(part)} entries, not {len(idx)}")
    return Saliency(scores=torch.cat(parts).double().cpu())
