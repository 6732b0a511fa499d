"""The filter-importance measures of Lubana & Dick's gradient-flow study ("A Gradient Flow
Framework for Analyzing Network Pruning", ICLR 2021), per filter of a prunable layer, from its
own weight theta_p [in * k * k] (not its BatchNorm, as their code scores filters):

    loss_preservation           sum_i |theta_i g_i|  (their code; elementwise=False: |theta_p . g|)
    biased_loss_preservation    sum_i |theta_i^2 g_i|  (the paper's proposed extension of loss
                                preservation, biased towards small magnitudes)
    grad_norm                   theta_p . (H g), signed: GraSP prunes the lowest (most negative)
                                first; `temperature=200` is GraSP's, 1 prunes without it;
                                `absolute=True` is |theta_p . (H g)| (gradient-norm preservation)
    grad_norm_untempered        grad_norm at T = 1 (GraSP without its temperature)
    grad_norm_preservation      |theta_p . (H g)| at T = 1 (their code's grad_preserve)

g and H are the gradient and Hessian of the mean loss over the N' samples, logits divided by
`temperature` (`sosp.curvature.flow_terms`, over every trainable parameter). Magnitude
(||theta_p||^2) is `magnitude` with norm l2, which orders filters alike. Prune the smallest.
"""

from __future__ import annotations

from sosp.curvature import check_differentiable, flow_terms
from sosp.methods.base import Context, Saliency, per_layer_scores

GRASP_TEMPERATURE = 200.0


def _terms(ctx: Context, temperature: float, hessian: bool):
    check_differentiable(ctx.graph)  # g and H g of every pruned layer's weight
    return flow_terms(
        ctx.graph.gm,
        ctx.batches,
        ctx.loss,
        ctx.n_samples,
        temperature,
        hessian,
        ctx.frozen,
        ctx.progress,
    )


def _per_filter(ctx: Context, values: dict, combine) -> Saliency:
    """Saliency from `combine(theta_p, v_p)` [out, in*k*k] -> [out] of each prunable layer's
    weight theta and its entry of `values` (gradient or H g)."""
    return per_layer_scores(
        ctx,
        lambda layer: combine(
            layer.holder.weight.detach().flatten(1),
            values[f"{layer.theta_module}.weight"].flatten(1),
        ),
    )


def loss_preservation(ctx: Context, temperature: float = 1.0, elementwise: bool = True) -> Saliency:
    """sum_i |theta_i g_i| per filter; `elementwise=False`: |theta_p . g_p| (first-order
    Taylor of the filter's removal)."""
    grad = _terms(ctx, temperature, hessian=False).grad
    if elementwise:
        return _per_filter(ctx, grad, lambda t, g: (t * g).abs().sum(1))
    return _per_filter(ctx, grad, lambda t, g: (t * g).sum(1).abs())


def biased_loss_preservation(ctx: Context, temperature: float = 1.0) -> Saliency:
    """sum_i |theta_i^2 g_i| per filter: loss preservation weighted by magnitude (Lubana &
    Dick's proposed measure)."""
    grad = _terms(ctx, temperature, hessian=False).grad
    return _per_filter(ctx, grad, lambda t, g: (t * t * g).abs().sum(1))


def grad_norm(
    ctx: Context, temperature: float = GRASP_TEMPERATURE, absolute: bool = False
) -> Saliency:
    """theta_p . (H g) per filter, signed (GraSP: the most negative pruned first); with
    `absolute`, its magnitude (gradient-norm preservation)."""
    hg = _terms(ctx, temperature, hessian=True).hessian_grad
    if absolute:
        return _per_filter(ctx, hg, lambda t, v: (t * v).sum(1).abs())
    return _per_filter(ctx, hg, lambda t, v: (t * v).sum(1))


def grad_norm_untempered(ctx: Context) -> Saliency:
    """GraSP without its temperature: theta_p . (H g) at T = 1 (their Figs. 16-17)."""
    return grad_norm(ctx, temperature=1.0)


def grad_norm_preservation(ctx: Context) -> Saliency:
    """|theta_p . (H g)| at T = 1: keep the gradient norm (their code's grad_preserve)."""
    return grad_norm(ctx, temperature=1.0, absolute=True)


METHODS = {
    "loss_preservation": loss_preservation,
    "biased_loss_preservation": biased_loss_preservation,
    "grad_norm": grad_norm,
    "grad_norm_untempered": grad_norm_untempered,
    "grad_norm_preservation": grad_norm_preservation,
}
