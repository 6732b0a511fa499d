"""SOSP-H (Eq. 7): lambda_H(s) = |theta_s . g| + 1/2 |theta_s . (H theta_struc)|, the exact
Hessian-vector product by double backpropagation; prune the smallest."""

from __future__ import annotations

from sosp.curvature import hessian_terms
from sosp.methods import Context, register
from sosp.selection import Saliency


@register("sosp_h")
def sosp_h(ctx: Context, hessian: bool = True) -> Saliency:
    """`hessian=False` is the first-order method |theta_s . g| (SOSP with H = 0)."""
    streamed = hessian_terms(ctx.graph, ctx.batches, ctx.loss, ctx.n_samples, hessian, ctx.progress)
    return Saliency(scores=streamed.lambda1.abs() + 0.5 * streamed.second.abs())
