"""Exact parameter and MAC counts of an actual (possibly pruned) architecture.

Conventions (those of the SOSP paper and most pruning papers):
- params: every parameter of the module, BatchNorm affine included, running statistics not.
- MACs per input sample: for Conv2d  k_h * k_w * (c_in / groups) * c_out * H_out * W_out,
  for Linear  in_features * out_features (times the number of positions it is applied to);
  nothing else (no BN, activation, pooling or bias terms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sosp.modes import eval_mode


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (unique tensors, so tied weights count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one Conv2d or Linear call for ONE sample, given its output [B, ...]."""
    per_sample = output[0].numel()  # c_out * H_out * W_out, or out_features * positions
    if isinstance(module, nn.Conv2d):
        k_h, k_w = module.kernel_size
        return k_h * k_w * (module.in_channels // module.groups) * per_sample
    if isinstance(module, nn.Linear):
        return module.in_features * per_sample
    raise TypeError(f"no MAC rule for {type(module).__name__}")


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass of one sample of shape `input_shape` = (C, H, W).

    Runs the model once (eval mode, batch of 1, on the model's device) with hooks on every
    Conv2d and Linear; a module called twice is counted twice.
    """
    total = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += layer_macs(module, output)

    counted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in counted]
    param = next(model.parameters(), None)
    kwargs = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    try:
        with eval_mode(model):
            model(torch.zeros(1, *input_shape, **kwargs))
    finally:
        for h in handles:
            h.remove()
    return total


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Counts:
    """Params and MACs of `model` on one sample of shape (C, H, W)."""
    return Counts(params=count_params(model), macs=count_macs(model, input_shape))
