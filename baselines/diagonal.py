"""Diagonal-only SOSP-I: G's off-diagonal correlations set to zero (the Fig. 5 ablation)."""

from sosp.methods import Context, register
from sosp.methods.sosp_i import sosp_i
from sosp.selection import Saliency


@register("diagonal")
def diagonal(ctx: Context, label_samples: int | None = None) -> Saliency:
    return sosp_i(ctx, diagonal=True, label_samples=label_samples)
