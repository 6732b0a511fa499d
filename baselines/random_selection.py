"""Random pruning (the Fig. 9 baseline): uniform scores from the run's seed, so the same seed
prunes the same structures and different seeds prune different ones."""

from __future__ import annotations

import torch

from sosp.methods.base import Context, Saliency, generator


def random(ctx: Context) -> Saliency:
    return Saliency(scores=torch.rand(len(ctx.graph.structures), generator=generator(ctx)))


METHODS = {"random": random}
