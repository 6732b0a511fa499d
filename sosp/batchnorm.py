"""BatchNorm running statistics re-estimated on the pruning samples.

Saliencies are computed in eval mode (BatchNorm on its running statistics, so samples do not
interact). An untrained network's running statistics are the initial 0 and 1, which makes its
eval-mode function meaningless (on a fresh ResNet-56 the logits' standard deviation is in the
hundreds and the softmax is one-hot); pruning at initialization therefore re-estimates them
first: `sosp.prune` does unless told otherwise whenever every BatchNorm still has them
(`has_initial_statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sosp.modes import eval_mode

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
Batch = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def logit_std(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Standard deviation of the eval-mode outputs of `model` over all `batches`."""
    p = next(model.parameters())
    with eval_mode(model):
        out = torch.cat([model(x.to(p.device, p.dtype)).flatten(1) for x, _ in batches])
    return float(out.std())


def tracked_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorms of `model` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, BATCHNORMS) and m.track_running_stats]


def has_initial_statistics(model: nn.Module) -> bool:
    """Whether `model` has BatchNorms with running statistics and every one of them still
    holds its initial ones (mean 0, variance 1, no batch counted): an untrained network."""
    bns = tracked_batchnorms(model)
    return bool(bns) and all(
        not m.running_mean.any()
        and bool((m.running_var == 1).all())
        and (m.num_batches_tracked is None or int(m.num_batches_tracked) == 0)
        for m in bns
    )


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Sequence[Batch]) -> dict:
    """Reset every BatchNorm's running statistics and re-estimate them, in place, as the
    average of its batch statistics over `batches` (BatchNorms in train mode, every other
    module in eval mode, so dropout stays off; no weights change). Returns
    {"samples", "logit_std_before", "logit_std_after"} of the eval-mode outputs."""
    bns = tracked_batchnorms(model)
    before = logit_std(model, batches)
    p = next(model.parameters())
    momenta = [m.momentum for m in bns]
    with eval_mode(model):
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
            m.train()
        try:
            for x, _ in batches:
                model(x.to(p.device, p.dtype))
        finally:
            for m, momentum in zip(bns, momenta, strict=True):
                m.momentum = momentum
    return {
        "samples": sum(len(x) for x, _ in batches),
        "batchnorms": len(bns),
        "logit_std_before": before,
        "logit_std_after": logit_std(model, batches),
    }
