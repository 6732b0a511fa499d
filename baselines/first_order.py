"""First-order pruning |theta_s . g|: SOSP with H = 0 (the Fig. 4 ablation)."""

from sosp.methods import Context, register
from sosp.methods.sosp_h import sosp_h
from sosp.selection import Saliency


@register("first_order")
def first_order(ctx: Context) -> Saliency:
    return sosp_h(ctx, hessian=False)
