"""Exact parameter and MAC counts of an actual (possibly pruned) architecture.

Conventions (those of the SOSP paper and most pruning papers):
- params: every parameter of the module, BatchNorm affine included, running statistics not.
- MACs per input sample: every convolution and matrix product the forward pass runs, however
  it is called (a module, `F.conv2d` inside a module's forward, `x @ w`, attention): for a
  conv  k_h * k_w * (c_in / groups) * c_out * H_out * W_out, for a Linear  in_features *
  out_features (times the number of positions it is applied to), for a product [n, k] @
  [k, m]  n * k * m, for attention QK^T and AV  L * S * (E + E_v) per head; nothing else (no
  BN, activation, pooling or bias terms), and not the placement products of the sums
  surgery inserts (`IndexAdd`, `ChannelScatter`: data movement done as a GEMM on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction

import torch
import torch.fx as fx
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sosp.modes import eval_mode
from sosp.shortcuts import ChannelScatter, IndexAdd


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
    """MACs of one forward pass of one sample of shape `input_shape` = (C, H, W): every
    convolution and matrix product of one eval-mode pass of a batch of 1 on the model's
    device, as ATen runs them (`MacCounter`; a module called twice is counted twice)."""
    macs = MacCounter()
    with _paused_in_sums(model, macs), macs, eval_mode(model):
        model(_one_sample(model, input_shape))
    return macs.total


def _one_sample(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Zeros [1, *input_shape] on the device and in the dtype of `model`'s parameters."""
    param = next(model.parameters(), None)
    kwargs = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    return torch.zeros(1, *input_shape, **kwargs)


class MacCounter(TorchDispatchMode):
    """Sums the MACs of every convolution and matrix product (mm, addmm, bmm, baddbmm, mv,
    dot, fused scaled-dot-product attention) dispatched while active: `total`. Composite
    operations (linear, matmul, einsum, unfused attention) arrive decomposed into these."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.paused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = _MAC_RULES.get(func.overloadpacket.__name__)
        if rule is None and "scaled_dot_product" in func.overloadpacket.__name__:
            rule = _attention_macs
        if rule is not None and not self.paused:
            self.total += rule(args, out)
        return out


def _conv_macs(args, out) -> int:
    x, weight, transposed = args[0], args[1], args[6]
    # each output element takes C_in / groups * k_h * k_w products; transposed, each input one
    return (x.numel() if transposed else out.numel()) * weight[0].numel()


def _attention_macs(args, out) -> int:
    q, k, v = args[:3]  # [..., L, E], [..., S, E], [..., S, E_v]
    heads = q[..., 0, 0].numel()
    return heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


_MAC_RULES: dict[str, Callable] = {
    "convolution": _conv_macs,
    "mm": lambda a, out: a[0].shape[0] * a[0].shape[1] * a[1].shape[1],
    "addmm": lambda a, out: a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    "bmm": lambda a, out: a[0].numel() * a[1].shape[2],
    "baddbmm": lambda a, out: a[1].numel() * a[2].shape[2],
    "mv": lambda a, out: a[0].numel(),
    "addmv": lambda a, out: a[1].numel(),
    "dot": lambda a, out: a[0].numel(),
}


@contextmanager
def _paused_in_sums(model: nn.Module, counter: MacCounter) -> Iterator[None]:
    """`counter` does not count inside the sums surgery inserts: their placement GEMM on a
    channels_last CPU tensor moves data."""

    def pause(_m, _args) -> None:
        counter.paused += 1

    def resume(_m, _args, _out) -> None:
        counter.paused -= 1

    sums = [m for m in model.modules() if isinstance(m, IndexAdd | ChannelScatter)]
    handles = [
        h
        for m in sums
        for h in (m.register_forward_pre_hook(pause), m.register_forward_hook(resume))
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def count(model: nn.Module, input_shape: tuple[int, ...]) -> Counts:
    """Params and MACs of `model` on one sample of shape (C, H, W)."""
    return Counts(params=count_params(model), macs=count_macs(model, input_shape))


# -- MAC-counting conventions of other papers -------------------------------------------------


@dataclass(frozen=True)
class LayerCount:
    """One Conv2d or Linear as run on one sample: `macs` (per sample, every call summed),
    input channels per group (`in_per_group`, in_features for Linear), output channels,
    groups."""

    macs: int
    in_per_group: int
    out: int
    groups: int


@torch.no_grad()
def layer_counts(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerCount]:
    """{qualified name: LayerCount} of every Conv2d and Linear that runs in one forward pass
    of one sample of shape (C, H, W), in the order they first run."""
    out: dict[str, LayerCount] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        name, macs = names[module], layer_macs(module, output)
        if isinstance(module, nn.Conv2d):
            shape = (module.in_channels // module.groups, module.out_channels, module.groups)
        else:
            shape = (module.in_features, module.out_features, 1)
        prev = out.get(name)
        out[name] = LayerCount(macs + (prev.macs if prev else 0), *shape)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with eval_mode(model):
            model(_one_sample(model, input_shape))
    finally:
        for h in handles:
            h.remove()
    return out


def main_path_producers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str | None]:
    """{Conv2d/Linear name: the Conv2d/Linear whose output it reads along the main path, or
    None where that is the network's input}, skip connections ignored.

    From a layer's input the fx graph is walked back through every other operation by its
    first tensor argument: at a residual sum `branch + shortcut` that is the branch (the
    operand order of torchvision's and this package's ResNets), at a concatenation its first
    part."""
    from sosp.structures import trace  # structures is heavier; counting stays light to import

    gm = trace(model, input_shape)
    layers = {
        n.name: n.target
        for n in gm.graph.nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.Conv2d | nn.Linear)
    }

    def producer(node: fx.Node) -> str | None:
        while node.name not in layers:
            args = [a for a in node.args if isinstance(a, fx.Node | list | tuple)]
            first = args[0] if args else None
            if isinstance(first, list | tuple):
                first = next((a for a in first if isinstance(a, fx.Node)), None)
            if first is None:  # the input (a placeholder) or a constant
                return None
            node = first
        return layers[node.name]

    return {
        target: producer(node.args[0])
        for node in gm.graph.nodes
        if (target := layers.get(node.name)) is not None
    }


def actual_macs(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of `pruned` as it runs (`count_macs`); `dense` is not needed."""
    return count_macs(pruned, input_shape)


def ccp_macs(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of `pruned` (a physically pruned copy of `dense`, layer names kept) in
    a reconstruction of the convention of CCP (Peng et al., ICML 2019), the SOSP paper's
    "alternative MAC count" of Table 2, whose definition (the paper's App. D) we do not have.

    The network is counted as a plain chain: every Conv2d/Linear l costs its dense MACs times
    kept_out(l)/out(l) times kept_out(p)/out(p), where p is the layer that feeds l along the
    main path (`main_path_producers`, skip connections ignored; 1 where l reads the input or
    is a grouped conv). So a filter pruned from a layer that writes a residual stream counts
    as removing that stream channel from the next block's input, although the stream keeps
    it (the shortcut still writes it): on ResNets the count is at most `actual_macs`; without
    skip connections it equals it.

    Fit (benchmarks/ccp_fit.py: SOSP-H/SOSP-H* masks of randomly initialized torchvision
    ResNet-18/50, not the paper's trained masks, cut at the paper's MAC reductions): the 8
    alternative reductions of Table 2 come out within 2.4 percentage points (mean 1.5, 0.3 to
    2.4 below for ResNet-50, 0.7 above for ResNet-18), once the printed "27%" of the
    2.44B-MAC ResNet-50 row is read as the 37% that 2.44B of 3.85B is; the next best candidate
    (a chain whose producer is the last layer of matching width) is off by 3 to 4. A
    reconstruction that fits, not CCP's published definition: treat it as an estimate.
    """
    before = layer_counts(dense, input_shape)
    after = layer_counts(pruned, input_shape)
    producers = main_path_producers(dense, input_shape)

    def kept_out(name: str) -> Fraction:
        return Fraction(after[name].out, before[name].out) if name in after else Fraction(0)

    total = Fraction(0)
    for name, layer in before.items():
        if name not in after:
            continue
        p = producers.get(name)
        if p is not None and layer.groups == 1:
            kept_in = kept_out(p)
        else:
            kept_in = Fraction(after[name].in_per_group, layer.in_per_group)
        total += layer.macs * kept_out(name) * kept_in
    return round(total)


Convention = Callable[[nn.Module, nn.Module, tuple[int, ...]], int]

# name -> MACs per sample of (dense, pruned, input_shape) under that paper's convention
CONVENTIONS: dict[str, Convention] = {"actual": actual_macs, "ccp": ccp_macs}
