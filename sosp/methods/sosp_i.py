"""SOSP-I (Eq. 2-6): Q = 1/2 |G| + diag(|lambda_1|), G the Gauss-Newton matrix of structure
directions, greedy selection by Eq. 4; and its diagonal-only ablation (Fig. 5)."""

from __future__ import annotations

from sosp.curvature import gauss_newton
from sosp.methods.base import Context, Saliency, generator


def sosp_i(ctx: Context, diagonal: bool = False, label_samples: int | None = None) -> Saliency:
    """`diagonal=True` drops the off-diagonal correlations (the Fig. 5 ablation);
    `label_samples=k` estimates G from k labels per input sampled from the softmax."""
    gn = gauss_newton(
        ctx.graph, ctx.batches, ctx.loss, ctx.n_samples, label_samples, generator(ctx), ctx.progress
    )
    q = 0.5 * gn.G.abs()
    if diagonal:
        q = q.diagonal().diag()
    q += gn.lambda1.abs().diag()
    return Saliency(q=q)


def diagonal(ctx: Context, label_samples: int | None = None) -> Saliency:
    """SOSP-I with G's off-diagonal correlations set to zero (the Fig. 5 ablation)."""
    return sosp_i(ctx, diagonal=True, label_samples=label_samples)


METHODS = {"sosp_i": sosp_i, "diagonal": diagonal}
