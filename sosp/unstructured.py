"""Weight-level (unstructured) pruning beside the structured one: which weights are prunable,
weight masks by magnitude under a sparsity allocation (`sosp.allocation`), keeping them in the
weights and the optimizer's state, and exact counts of a sparse network.

Prunable weights are those of every Conv2d and Linear layer (the paper's code prunes every
module weight but BatchNorm's; its networks have no others). A weight mask is {parameter
name: bool tensor of the weight's shape, True = kept}, on the weight's device. A model file
of a sparse network holds its mask as "weight_mask" (CPU tensors); `mask_of` reads it.
"""

from __future__ import annotations

import torch
from torch import nn

from sosp import allocation
from sosp.errors import BadInput
from sosp.modes import eval_mode

PRUNABLE = (nn.Conv2d, nn.Linear)
WeightMask = dict[str, torch.Tensor]
MODEL_FILE_KEY = "weight_mask"


def prunable(model: nn.Module) -> dict[str, nn.Parameter]:
    """{"<module>.weight": weight} of every Conv2d and Linear, in module order."""
    return {
        f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, PRUNABLE)
    }


def magnitude_scores(model: nn.Module, previous: WeightMask | None = None) -> dict:
    """|w| of every prunable weight [its shape], entries `previous` pruned at -inf."""
    scores = {}
    for name, w in prunable(model).items():
        s = w.detach().abs().double()
        if previous is not None and name in previous:
            s = s.masked_fill(~previous[name], float("-inf"))
        scores[name] = s
    return scores


def keep_largest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the `k` largest entries of `scores` (same shape)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.topk(scores.flatten(), k, sorted=False).indices] = True
    return keep.view_as(scores)


def magnitude_mask(
    model: nn.Module, sparsity: float, how: str = "global", previous: WeightMask | None = None
) -> WeightMask:
    """The weight mask at `sparsity` (of all prunable weights) under allocation `how`: each
    layer keeps its largest magnitudes among the weights `previous` kept (pruned weights stay
    pruned while a layer's count does not grow past what it kept)."""
    scores = magnitude_scores(model, previous)
    kept = allocation.counts(how, scores, sparsity)
    return {name: keep_largest(s, kept[name]) for name, s in scores.items()}


@torch.no_grad()
def apply(model: nn.Module, mask: WeightMask, optimizer: torch.optim.Optimizer | None = None):
    """Zero the masked weights, and their momentum buffers in `optimizer` where it has them."""
    weights = prunable(model)
    unknown = sorted(set(mask) - set(weights))
    if unknown:
        raise BadInput(
            f"the weight mask names {', '.join(unknown[:3])}, which the model lacks; pass the "
            "mask of this model"
        )
    for name, keep in mask.items():
        w = weights[name]
        w.mul_(keep.to(w.dtype))
        state = optimizer.state.get(w, {}) if optimizer is not None else {}
        if state.get("momentum_buffer") is not None:
            state["momentum_buffer"].mul_(keep.to(w.dtype))


def mask_of(ckpt: dict) -> WeightMask | None:
    """The weight mask a model file holds, else None."""
    return ckpt.get(MODEL_FILE_KEY)


def to_cpu(mask: WeightMask) -> WeightMask:
    return {name: keep.detach().cpu() for name, keep in mask.items()}


def on_device(mask: WeightMask, model: nn.Module) -> WeightMask:
    """`mask` on the devices of the model's weights."""
    weights = prunable(model)
    return {name: keep.to(weights[name].device) for name, keep in mask.items()}


# -- exact counts ----------------------------------------------------------------------------


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """{"<module>.weight": output positions per sample} of every Conv2d (H_out * W_out) and
    Linear (the positions it is applied to, 1 on [B, F]) in one forward pass of one sample of
    shape (C, H, W); a module called twice counts both calls."""
    names = {m: n for n, m in model.named_modules()}
    found: dict[str, int] = {}

    def record(module, _inputs, output):
        per_sample = output[0].numel()
        channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        key = f"{names[module]}.weight"
        found[key] = found.get(key, 0) + per_sample // channels

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, PRUNABLE)]
    try:
        device = next(model.parameters()).device
        with eval_mode(model):
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
    return found


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of zero entries of every prunable weight."""
    return {name: float((w == 0).sum()) / w.numel() for name, w in prunable(model).items()}


@torch.no_grad()
def counts(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Exact counts of a sparse network on one sample of shape (C, H, W):
    params / nonzero_params (every parameter), prunable / nonzero_prunable (Conv2d and Linear
    weights), sparsity (zeros among the prunable weights), flops (multiply-adds of every
    Conv2d and Linear, dense) and nonzero_flops (those of the nonzero weights: each nonzero
    weight once per output position), speedup = flops / nonzero_flops (the theoretical
    speed-up), and each layer's sparsity."""
    params = list({id(p): p for p in model.parameters()}.values())
    weights = prunable(model)
    positions = output_positions(model, input_shape)
    flops = sum(positions[n] * w.numel() for n, w in weights.items() if n in positions)
    nonzero_flops = sum(
        positions[n] * int((w != 0).sum()) for n, w in weights.items() if n in positions
    )
    prunable_n = sum(w.numel() for w in weights.values())
    nonzero_prunable = sum(int((w != 0).sum()) for w in weights.values())
    return {
        "params": sum(p.numel() for p in params),
        "nonzero_params": sum(int((p != 0).sum()) for p in params),
        "prunable": prunable_n,
        "nonzero_prunable": nonzero_prunable,
        "sparsity": 1 - nonzero_prunable / prunable_n,
        "flops": flops,
        "nonzero_flops": nonzero_flops,
        "speedup": flops / nonzero_flops if nonzero_flops else float("inf"),
        "layer_sparsity": layer_sparsity(model),
    }
