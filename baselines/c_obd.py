"""C-OBD (Wang et al. 2019, the structured OBD baseline of the EigenDamage code): the diagonal
of the true Fisher, F_ii = (1/N') sum_n (d l(f(x_n), y~_n) / d w_i)^2 with y~_n sampled from the
model's own softmax, and filter saliency sum_i F_ii w_i^2 over the filter's conv/linear weight
and bias (as EigenDamage's `FisherDiagPruner` with normalize=false; its constant 1/2 dropped).
Table 1 runs it with one global threshold and `max_layer_fraction=0.95`.

Per-example gradients come from module inputs and output gradients (a convolution's per-example
weight gradient is one grouped `conv2d_weight` with the batch folded into the groups), not from
`torch.func`, which the tests use as the independent check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sosp.curvature import check_differentiable, take_samples
from sosp.errors import BadInput
from sosp.methods.base import Context, Saliency, generator, per_layer_scores
from sosp.modes import eval_mode

CHUNK_ELEMENTS = 2**24  # per-example gradients held at once (64 MiB in float32)


def c_obd(ctx: Context) -> Saliency:
    if ctx.loss != "cross_entropy":
        raise BadInput("c_obd samples labels from the softmax; use loss='cross_entropy'")
    check_differentiable(ctx.graph)  # the Fisher's gradients flow through the pruned layers
    modules = {n: layer.holder for n, layer in ctx.graph.layers.items() if layer.prunable}
    fisher = fisher_diagonal(modules, ctx.model, ctx.batches, ctx.n_samples, generator(ctx), ctx)

    def saliency(layer) -> torch.Tensor:
        m = layer.holder
        total = (fisher[layer.name]["weight"] * m.weight.detach() ** 2).flatten(1).sum(1)
        if m.bias is not None:
            total = total + fisher[layer.name]["bias"] * m.bias.detach() ** 2
        return total

    return per_layer_scores(ctx, saliency)


def sampled_labels(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One label per row [B] drawn from softmax(logits) with the CPU generator `gen`."""
    prob = logits.detach().double().softmax(1).cpu()
    return torch.multinomial(prob, 1, generator=gen).flatten().to(logits.device)


def fisher_diagonal(
    modules: dict[str, nn.Module],
    model: nn.Module,
    batches,
    n_samples: int,
    gen: torch.Generator,
    ctx: Context | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {'weight': F [*weight.shape], 'bias': F [out]}} for the Conv2d/Linear
    `modules` of `model` (eval mode), averaged over the first `n_samples` samples of `batches`,
    labels drawn by `sampled_labels` in batch order."""
    p = next(model.parameters())
    acc = {
        n: {"weight": torch.zeros_like(m.weight, dtype=torch.float64)} for n, m in modules.items()
    }
    for n, m in modules.items():
        if m.bias is not None:
            acc[n]["bias"] = torch.zeros_like(m.bias, dtype=torch.float64)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda _m, i, o, n=n: _keep(seen, n, i[0], o))
        for n, m in modules.items()
    ]
    n = 0
    bar = tqdm(total=n_samples, desc="fisher", disable=not (ctx and ctx.progress), unit="sample")
    try:
        with eval_mode(model):
            for x, _ in take_samples(batches, n_samples, p.device, p.dtype):
                out = model(x)
                loss = F.cross_entropy(out, sampled_labels(out, gen), reduction="sum")
                names = list(seen)
                gouts = torch.autograd.grad(loss, [seen[k][1] for k in names])
                for name, gout in zip(names, gouts, strict=True):
                    _accumulate(acc[name], modules[name], seen[name][0], gout.detach())
                seen.clear()
                n += len(x)
                bar.update(len(x))
    finally:
        bar.close()
        for h in handles:
            h.remove()
    if n == 0:
        raise BadInput("no samples: the data passed for pruning is empty")
    return {name: {k: v / n for k, v in d.items()} for name, d in acc.items()}


def _keep(seen: dict, name: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Remember the module's input and output; hand the network a copy of the output, so that
    an in-place op after the module cannot change the tensor whose gradient we take."""
    seen[name] = (x.detach(), out)
    return out.clone()


def _accumulate(acc: dict[str, torch.Tensor], m: nn.Module, x: torch.Tensor, gout: torch.Tensor):
    """Add sum_n g_n^2 of the per-example gradients of `m`'s weight and bias to `acc`."""
    chunk = max(1, CHUNK_ELEMENTS // m.weight.numel())
    for i in range(0, len(x), chunk):
        gw, gb = per_example_grads(m, x[i : i + chunk], gout[i : i + chunk])
        acc["weight"] += (gw.double() ** 2).sum(0)
        if "bias" in acc:
            acc["bias"] += (gb.double() ** 2).sum(0)


def per_example_grads(
    m: nn.Module, x: torch.Tensor, gout: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradients of `m`'s weight [B, *weight.shape] and bias [B, out], from its
    input `x` and the gradient `gout` of a summed loss w.r.t. its output."""
    if isinstance(m, nn.Linear):  # [B, ..., features]: sum over the middle dimensions
        g = gout.reshape(len(gout), -1, gout.shape[-1])
        a = x.reshape(len(x), -1, x.shape[-1])
        return torch.einsum("bto,bti->boi", g, a), g.sum(1)
    if not isinstance(m, nn.Conv2d) or isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise BadInput(
            f"c_obd handles Linear and zero-padded Conv2d with numeric padding, not {m!r}; "
            "exclude this layer"
        )
    b, c_in, h, w = x.shape
    c_out = m.out_channels
    gw = torch.nn.grad.conv2d_weight(
        x.reshape(1, b * c_in, h, w),
        (b * c_out, *m.weight.shape[1:]),
        gout.reshape(1, b * c_out, *gout.shape[2:]),
        m.stride,
        m.padding,
        m.dilation,
        b * m.groups,
    )
    return gw.view(b, *m.weight.shape), gout.sum((2, 3))


METHODS = {"c_obd": c_obd}
