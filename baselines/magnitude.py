"""Filter-norm pruning (Li et al. 2017): prune the filters with the smallest L1 (or L2) norm of
their conv/linear weight."""

from __future__ import annotations

from sosp.errors import BadInput
from sosp.methods.base import Context, Saliency, per_layer_scores

NORMS = {"l1": 1, "l2": 2}


def magnitude(ctx: Context, norm: str = "l1") -> Saliency:
    if norm not in NORMS:
        raise BadInput(f"magnitude norm must be one of {', '.join(NORMS)}, not {norm!r}")
    return per_layer_scores(
        ctx, lambda layer: layer.holder.weight.detach().flatten(1).norm(p=NORMS[norm], dim=1)
    )


METHODS = {"magnitude": magnitude}
