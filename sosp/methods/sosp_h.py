"""SOSP-H (Eq. 7): lambda_H(s) = |theta_s . g| + 1/2 |theta_s . (H theta_struc)|, the exact
Hessian-vector product by double backpropagation; prune the smallest. With H = 0 it is the
first-order method of the Fig. 4 ablation."""

from __future__ import annotations

from sosp.curvature import hessian_terms
from sosp.methods.base import Context, Saliency


def sosp_h(ctx: Context, hessian: bool = True) -> Saliency:
    """`hessian=False` is the first-order method |theta_s . g| (SOSP with H = 0)."""
    terms = hessian_terms(ctx.graph, ctx.batches, ctx.loss, ctx.n_samples, hessian, ctx.progress)
    return Saliency(scores=terms.lambda1.abs() + 0.5 * terms.h_theta.abs())


def first_order(ctx: Context) -> Saliency:
    """|theta_s . g|: SOSP with H = 0 (the Fig. 4 ablation)."""
    return sosp_h(ctx, hessian=False)


METHODS = {"sosp_h": sosp_h, "first_order": first_order}
