"""Prunable structures of a CNN and how channels couple through the network graph.

A *writer* is a Conv2d (groups=1) or Linear layer; each of its output channels is a writer
channel. A *structure* is a writer channel of a prunable layer (not the classifier, not an
excluded layer). Its weights theta_s are every parameter slice that removing the channel
deletes and whose zeroing makes the channel exactly zero (`StructureGraph.theta`):
W[s], b[s]; gamma[s], beta[s] of an affine BatchNorm that directly (and privately) follows
the writer; and the slice of every per-channel consumer (a pre-activation BatchNorm, a
depthwise convolution) of a channel that s alone writes (DenseNet, MobileNet). So zeroing
theta_s is exactly the removal that surgery applies, and each of those modules' output
channel is homogeneous of degree one in its slice (the gate identity of `curvature`).

Two cases are not covered by that equality, both documented rather than hidden: a BatchNorm
without affine parameters holds no part of theta_s (zeroing W[s], b[s] leaves its constant
-mean/std, which removal drops), and a consumer slice of a channel with several writers
(a pre-activation residual stream) belongs to no single structure (it goes when its last
writer goes). A BatchNorm with `track_running_stats=False` normalizes by batch statistics
even in eval mode, so samples interact: it is refused.

The model is traced with torch.fx and every tensor's channel dimension (dim 1) is annotated
with the set of writer channels that contribute to each of its channels: a residual sum takes
the union, a concatenation appends, a zero-padding shortcut shifts. A channel is *alive* while
any of its writers is alive, and a dead channel is exactly zero (only zero-preserving
operations are admitted between writers). Ops that act per channel on a tensor they do not
write (a pre-activation BatchNorm, a depthwise convolution) are *consumers*: their slice of a
dead channel is zeroed by the soft mask and removed by surgery. Anything else fails loudly.
"""

from __future__ import annotations

import fnmatch
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from sosp.errors import BadInput
from sosp.models.cifar_resnet import ZeroPadShortcut
from sosp.modes import eval_mode

# The SOSP paper's exclusion for ResNets: the downsampling path is never pruned.
PRESETS: dict[str, list[str]] = {
    "resnet_downsample": ["*shortcut*", "*downsample*"],
    "none": [],
}

# Elementwise or spatial ops that map a zero channel to a zero channel and keep channels apart.
ZERO_PRESERVING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Tanh,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)  # fmt: skip
ZERO_PRESERVING_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.silu, F.gelu, F.hardswish, torch.tanh,
    F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
}  # fmt: skip
ZERO_PRESERVING_METHODS = {"relu", "relu_", "contiguous", "tanh"}
ADD = {operator.add, operator.iadd, torch.add}
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)

Sources = list[frozenset[int]]  # per channel: ids of the writer channels that feed it


class Unsupported(BadInput):
    """The model contains an operation whose channel semantics the analysis cannot prove."""


@dataclass
class Layer:
    """A writer layer: `name` of the Conv2d/Linear, the BatchNorm that privately follows it."""

    name: str
    module: nn.Module
    node: str
    bn: str | None
    prunable: bool
    first_id: int  # writer-channel ids of this layer are first_id .. first_id + out - 1

    @property
    def out_channels(self) -> int:
        return self.module.weight.shape[0]

    @property
    def kernel_side(self) -> float:
        """The kernel's side length (1, 3, 7; sqrt(k_h k_w) for a non-square kernel, 1 for a
        Linear): what SOSP* divides saliencies by."""
        w = self.module.weight
        return float(w[0, 0].numel()) ** 0.5 if w.dim() > 2 else 1.0


@dataclass
class Consumer:
    """A per-channel op on channels it does not write: a consumer BatchNorm or depthwise conv."""

    name: str
    node: str


@dataclass(frozen=True)
class ThetaSlice:
    """Output channels `channels` of module `module` (its weight and bias along dim 0) hold
    part of theta_s of the structures `structures` (one structure per channel)."""

    module: str
    channels: tuple[int, ...]
    structures: tuple[int, ...]


@dataclass
class StructureGraph:
    """The traced model with channel sources on every tensor node.

    `structures[i] = (layer_name, channel)` in graph order; `writer_ids[i]` is its writer id;
    `theta` lists where the parameters of every structure live (module docstring).
    """

    gm: fx.GraphModule
    layers: dict[str, Layer]
    consumers: list[Consumer]
    sources: dict[str, Sources]
    num_writers: int
    structures: list[tuple[str, int]] = field(default_factory=list)
    writer_ids: list[int] = field(default_factory=list)
    theta: list[ThetaSlice] = field(default_factory=list)

    def structure_index(self) -> dict[tuple[str, int], int]:
        return {s: i for i, s in enumerate(self.structures)}

    def alive_writers(self, pruned: Iterable[int]) -> torch.Tensor:
        """Bool [num_writers]: False exactly for the writer channels of the pruned structures."""
        alive = torch.ones(self.num_writers, dtype=torch.bool)
        ids = [self.writer_ids[i] for i in pruned]
        alive[ids] = False
        return alive

    def kept(self, node: str, alive: torch.Tensor) -> list[int]:
        """Channels of tensor `node` with at least one alive writer, in order."""
        return [c for c, src in enumerate(self.sources[node]) if any(alive[i] for i in src)]

    def layer_structures(self) -> dict[str, list[int]]:
        """Layer name -> indices (into `structures`) of its structures."""
        out: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(self.structures):
            out.setdefault(name, []).append(i)
        return out


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ZeroPadShortcut) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, input_shape: Sequence[int]) -> fx.GraphModule:
    """fx GraphModule of `model` (sharing its modules) with tensor shapes of one sample
    [1, *input_shape] recorded on every node."""
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many types for data-dependent control flow
        raise Unsupported(f"cannot trace {type(model).__name__} with torch.fx: {e}") from e
    gm = fx.GraphModule(model, graph)
    p = next(model.parameters())
    with eval_mode(model):
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    return gm


def exclusion_patterns(exclude: str | Sequence[str] | None) -> list[str]:
    """Module-name patterns (fnmatch) from a preset name, a pattern, or a list of them."""
    if exclude is None:
        return []
    items = [exclude] if isinstance(exclude, str) else list(exclude)
    return [p for item in items for p in PRESETS.get(item, [item])]


def analyze(
    model: nn.Module, input_shape: Sequence[int], exclude: str | Sequence[str] | None = None
) -> StructureGraph:
    """Trace `model` on inputs of shape `input_shape` (C, H, W) and find its structures.

    `exclude`: fnmatch patterns of module names never pruned, or a preset name from `PRESETS`.
    Raises `Unsupported` naming the first node whose channel semantics are unknown.
    """
    gm = trace(model, input_shape)
    return _Analysis(gm, exclusion_patterns(exclude)).run()


class _Analysis:
    def __init__(self, gm: fx.GraphModule, exclude: list[str]):
        self.gm, self.exclude = gm, exclude
        self.modules = dict(gm.named_modules())
        self.sources: dict[str, Sources] = {}
        self.layers: dict[str, Layer] = {}
        self.consumers: list[Consumer] = []
        self.num_writers = 0

    # -- helpers --------------------------------------------------------------------------
    def new_writers(self, n: int) -> Sources:
        first = self.num_writers
        self.num_writers += n
        return [frozenset([first + c]) for c in range(n)]

    def src(self, arg) -> Sources:
        if not isinstance(arg, fx.Node) or arg.name not in self.sources:
            raise Unsupported(f"expected a tensor produced by the network, got {arg!r}")
        return self.sources[arg.name]

    @staticmethod
    def fail(node: fx.Node, what: str) -> Unsupported:
        return Unsupported(
            f"cannot prune through node {node.name!r} ({node.op} {node.target}): {what}. "
            "Exclude the layers around it (exclude=[...]) or extend sosp/structures.py."
        )

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> StructureGraph:
        for node in self.gm.graph.nodes:
            out = self.visit(node)
            if out is not None:
                self.sources[node.name] = out
        self.mark_classifiers()
        g = StructureGraph(self.gm, self.layers, self.consumers, self.sources, self.num_writers)
        for layer in self.layers.values():
            if layer.prunable:
                for c in range(layer.out_channels):
                    g.structures.append((layer.name, c))
                    g.writer_ids.append(layer.first_id + c)
        if not g.structures:
            raise BadInput("the model has no prunable structures (all layers excluded?)")
        g.theta = self.theta_slices(g)
        return g

    def theta_slices(self, g: StructureGraph) -> list[ThetaSlice]:
        """Where theta_s lives: the writer, its affine private BN, and consumer slices of
        channels with a single writer that is a structure."""
        structure_of = {w: i for i, w in enumerate(g.writer_ids)}
        out = []
        for layer in self.layers.values():
            if not layer.prunable:
                continue
            idx = tuple(structure_of[layer.first_id + c] for c in range(layer.out_channels))
            channels = tuple(range(layer.out_channels))
            out.append(ThetaSlice(layer.name, channels, idx))
            if layer.bn is not None and _has_params(self.modules[layer.bn]):
                out.append(ThetaSlice(layer.bn, channels, idx))
        for consumer in self.consumers:
            if not _has_params(self.modules[consumer.name]):
                continue
            owned = [
                (c, structure_of[next(iter(src))])
                for c, src in enumerate(self.sources[consumer.node])
                if len(src) == 1 and next(iter(src)) in structure_of
            ]
            if owned:
                channels, idx = zip(*owned, strict=True)
                out.append(ThetaSlice(consumer.name, channels, idx))
        return out

    def visit(self, node: fx.Node) -> Sources | None:
        if node.op == "placeholder":
            shape = node.meta["tensor_meta"].shape
            return self.new_writers(shape[1])  # input channels: writers that are always alive
        if node.op == "output":
            return None
        if node.op == "get_attr":
            raise self.fail(node, "parameters used outside a module")
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        return self.visit_function(node)

    def visit_module(self, node: fx.Node, m: nn.Module) -> Sources:
        (x,) = node.args
        if isinstance(m, nn.Conv2d):
            if m.groups == 1:
                return self.writer(node, m)
            if m.groups == m.in_channels == m.out_channels:
                self.consumers.append(Consumer(node.target, node.name))
                return self.src(x)
            raise self.fail(node, f"grouped convolution with {m.groups} groups")
        if isinstance(m, nn.Linear):
            return self.writer(node, m)
        if isinstance(m, BATCHNORMS):
            if not m.track_running_stats:
                raise Unsupported(
                    f"BatchNorm {node.target!r} has track_running_stats=False: it normalizes "
                    "every batch by its own statistics, even in eval mode, so samples interact "
                    "and per-sample derivatives are undefined. Build it with "
                    "track_running_stats=True and prune with recalibrate_bn=True"
                )
            writer = self.private_writer(x)
            if writer is not None and self.layers[writer].bn is None:
                self.layers[writer].bn = node.target
            else:
                self.consumers.append(Consumer(node.target, node.name))
            return self.src(x)
        if isinstance(m, ZERO_PRESERVING_MODULES):
            return self.src(x)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim)
        if isinstance(m, ZeroPadShortcut):
            return (
                [frozenset()] * m.offset
                + self.src(x)
                + [frozenset()] * (m.out_channels - m.in_channels - m.offset)
            )
        raise self.fail(node, f"module type {type(m).__name__} is not supported")

    def visit_function(self, node: fx.Node) -> Sources | None:
        target, args = node.target, node.args
        if node.op == "call_method" and target in ("size", "dim"):
            return None
        if target in ADD or (node.op == "call_method" and target in ("add", "add_")):
            a, b = args[:2]
            if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
                raise self.fail(node, "adding a constant does not preserve zero channels")
            sa, sb = self.src(a), self.src(b)
            if len(sa) != len(sb):
                raise self.fail(node, "operands of different channel counts (broadcasting)")
            return [x | y for x, y in zip(sa, sb, strict=True)]
        if target is torch.cat or (node.op == "call_method" and target == "cat"):
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim != 1:
                raise self.fail(node, f"concatenation along dim {dim}")
            return [s for t in args[0] for s in self.src(t)]
        if target is torch.flatten or (node.op == "call_method" and target == "flatten"):
            start = node.kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            return self.flatten(node, args[0], start)
        if target in ZERO_PRESERVING_FUNCTIONS or (
            node.op == "call_method" and target in ZERO_PRESERVING_METHODS
        ):
            return self.src(args[0])
        if node.op == "call_method" and target == "mean":
            dims = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = (dims,) if isinstance(dims, int) else dims
            if dims is not None and 1 not in dims and 0 not in dims:
                return self.src(args[0])
        raise self.fail(node, "operation not supported")

    def writer(self, node: fx.Node, m: nn.Module) -> Sources:
        sources = self.new_writers(m.weight.shape[0])
        prunable = not any(fnmatch.fnmatchcase(node.target, p) for p in self.exclude)
        first = next(iter(sources[0]))
        self.layers[node.target] = Layer(node.target, m, node.name, None, prunable, first)
        return sources

    def private_writer(self, x) -> str | None:
        """The writer layer whose output is `x` and used by nothing else, if any."""
        if isinstance(x, fx.Node) and x.op == "call_module" and x.target in self.layers:
            if len(x.users) == 1:
                return x.target
        return None

    def flatten(self, node: fx.Node, x, start: int) -> Sources:
        shape = x.meta["tensor_meta"].shape
        if start != 1:
            raise self.fail(node, f"flatten from dim {start}")
        per_channel = 1
        for d in shape[2:]:
            per_channel *= d
        return [s for s in self.src(x) for _ in range(per_channel)]

    def mark_classifiers(self) -> None:
        """Writers whose output reaches the model output without passing another writer
        produce the network's outputs and are never pruned."""
        writer_nodes = {layer.node: layer for layer in self.layers.values()}
        stack = [n for n in self.gm.graph.nodes if n.op == "output"]
        seen = set()
        while stack:
            node = stack.pop()
            for arg in node.all_input_nodes:
                if arg.name in seen:
                    continue
                seen.add(arg.name)
                if arg.name in writer_nodes:
                    writer_nodes[arg.name].prunable = False
                else:
                    stack.append(arg)


def _has_params(m: nn.Module) -> bool:
    """Whether `m` has a weight (an affine BatchNorm, a convolution)."""
    return getattr(m, "weight", None) is not None


def slice_params(m: nn.Module) -> list[nn.Parameter]:
    """The parameters of `m` that a `ThetaSlice` slices along dim 0: weight and bias."""
    return [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
