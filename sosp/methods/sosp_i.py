"""SOSP-I (Eq. 2-6): Q = 1/2 |G| + diag(|lambda_1|), G the Gauss-Newton matrix of structure
directions, greedy selection by Eq. 4."""

from __future__ import annotations

from sosp.curvature import gauss_newton
from sosp.methods import Context, generator, register
from sosp.selection import Saliency


@register("sosp_i")
def sosp_i(ctx: Context, diagonal: bool = False, label_samples: int | None = None) -> Saliency:
    """`diagonal=True` drops the off-diagonal correlations (the Fig. 5 ablation);
    `label_samples=k` estimates G from k labels per input sampled from the softmax."""
    streamed = gauss_newton(
        ctx.graph, ctx.batches, ctx.loss, ctx.n_samples, label_samples, generator(ctx), ctx.progress
    )
    q = 0.5 * streamed.second.abs()
    if diagonal:
        q = q.diagonal().diag()
    q += streamed.lambda1.abs().diag()
    return Saliency(q=q)
