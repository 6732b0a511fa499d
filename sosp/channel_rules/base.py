"""What every channel rule builds on: sources, roles, the `Walk` a rule sees, the rule base
classes (`ModuleRule`, `OpRule`), the channels-last and blocked source layouts, the elementwise
ops that map zero to zero, and the helpers rules share (`sosp.channel_rules` explains the table)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Protocol

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from sosp.errors import BadInput

Sources = list[frozenset[int]]  # per channel: ids of the writer channels that feed it
Kept = dict[str, list[int]]  # node name -> kept channels of its output


class Unsupported(BadInput):
    """The model contains an operation whose channel semantics the analysis cannot prove."""


def unsupported(node: fx.Node, what: str) -> Unsupported:
    """The error for a node the table cannot prune through, naming the node."""
    return Unsupported(
        f"cannot prune through node {node.name!r} ({node.op} {node.target}): {what}. "
        "The supported operations are the rules of sosp/channel_rules/; add one there, "
        "or change the model."
    )


class Role(Enum):
    """What a module is to the analysis (module docstring)."""

    WRITER = "writer"
    NORM = "norm"
    CONSUMER = "consumer"
    MAP = "map"


def slice_params(m: nn.Module) -> list[nn.Parameter]:
    """The parameters of `m` indexed by output channel along dim 0: weight and bias."""
    return [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]


@torch.no_grad()
def _select(t: torch.Tensor, idx: Sequence[int] | torch.Tensor, dim: int = 0) -> torch.Tensor:
    """A copy of `t` with entries `idx` (indices, or their tensor on `t`'s device) along
    `dim`."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.tensor(list(idx), dtype=torch.long, device=t.device)
    return t.index_select(dim, idx)


def _copy_to_shrink(m: nn.Module, *replaced: str) -> nn.Module:
    """A deep copy of `m` in which the tensors named `replaced` (each of which the caller sets
    anew) are not copied, only shared until then: a copy costs an operation per tensor."""
    memo = {id(t): t for name in replaced if (t := getattr(m, name, None)) is not None}
    return copy.deepcopy(m, memo)


def _shrink_bias(m: nn.Module, out_idx: Sequence[int]) -> None:
    if m.bias is not None:
        m.bias = nn.Parameter(_select(m.bias, out_idx))


class Walk(Protocol):
    """What a rule sees of the analysis walking the graph (`sosp.structures`)."""

    def src(self, arg: object) -> Sources:
        """The sources of tensor argument `arg`; fails for anything else."""

    def is_tainted(self, arg: object) -> bool:
        """Whether `arg` is a tensor whose dead channels need not be zero (module docstring)."""

    def tie(self, node: fx.Node, value: fx.Node, gate: fx.Node) -> None:
        """Make gate's channel c follow value's channel c (product `node` = value * gate)."""

    def is_parameter(self, arg: object) -> bool:
        """Whether `arg` is a parameter of the model read directly (or a reshape of one)."""

    def link(self, groups: Iterable[frozenset[int]]) -> None:
        """Make each group of writer ids go together (one structure)."""

    def constants(self, n: int) -> Sources:
        """Sources of `n` channels that are never pruned: a parameter's (a class token, a
        position embedding) joined into a tensor of the network."""


class ModuleRule:
    """A parameter-free module that keeps channels apart and maps a zero channel to a zero
    channel (activations, dropout, pooling): sources pass through, surgery keeps it as is."""

    zero_preserving = True
    channel_dim = 1  # of the output: 1 (NCHW, [B, C]) or -1 (a Linear, a channels-last norm)
    reads_whole = False  # True: every channel the module reads must stay (no shrinkable input)

    def role(self, node: fx.Node, m: nn.Module) -> Role:
        return Role.MAP

    def input_of(self, node: fx.Node, m: nn.Module) -> fx.Node:
        """The tensor the module reads: its one argument."""
        if len(node.args) != 1:
            raise unsupported(node, f"a {type(m).__name__} called on {len(node.args)} inputs")
        return node.args[0]

    def written(self, node: fx.Node, m: nn.Module, x: Sources, out: Sources) -> Sources:
        """A WRITER's output sources `out` (fresh ids) in the layout its input `x` implies;
        fails for an input layout the writer cannot read."""
        return out

    def sources(self, node: fx.Node, m: nn.Module, x: Sources) -> Sources:
        """Sources of the output [C_out] for sources `x` [C_in] of the input (not for WRITER)."""
        return x

    def links(self, m: nn.Module, x: Sources, out: Sources) -> list[frozenset[int]]:
        """Sets of writer ids that only go together, for input sources `x` and output
        sources `out` (a WRITER's fresh ids)."""
        return []

    def gate_site(self, m: nn.Module) -> tuple[nn.Module, str]:
        """(module, "output" or "input"): the tensor whose channels SOSP's structure gates
        scale, where the output channels of `m` are homogeneous of degree one in its slice."""
        return m, "output"

    def out_channels(self, m: nn.Module) -> int:
        """A WRITER's output channels."""
        return m.weight.shape[0]

    def theta_part(self, m: nn.Module) -> str:
        """The submodule of a WRITER `m` that holds its theta_s, along dim 0 of its weight and
        bias ("" for `m` itself): an attention block's output projection."""
        return ""

    def shrink(self, m: nn.Module, out_idx: list[int], in_idx: list[int]) -> nn.Module | None:
        """A new `m` with output channels `out_idx` and input channels `in_idx` of the old one;
        None where `m` needs no change."""
        return None

    def zero(self, m: nn.Module, channels: list[int]) -> None:
        """Make output channels `channels` of `m` zero for a zero input channel (for a writer,
        for any input), in place."""
        for p in slice_params(m):
            p[channels] = 0


class TaintingModuleRule(ModuleRule):
    """An elementwise module that maps zero to nonzero (nn.Sigmoid, nn.Hardsigmoid)."""

    zero_preserving = False


class ChannelsLast(list):
    """Sources of a tensor whose channels are its last dim (ConvNeXt's blocks: a permute to
    [B, H, W, C], a LayerNorm, Linear layers, a permute back)."""


def _check_channels_first(node: fx.Node, x: Sources) -> None:
    if isinstance(x, ChannelsLast | Blocked):
        raise unsupported(node, "its input's channels are not in dim 1")


class Blocked(list):
    """Sources of a tensor whose channels a view has split over dims 1 and 2 (`block` = their
    sizes), in memory order; `perm[i]`: the channel before that view (node `origin`) now at
    position i. A channel shuffle is such a view, a transpose of dims 1 and 2, and a view
    back."""

    def __init__(self, sources: Sources, block: tuple[int, int], perm: list[int], origin: str):
        super().__init__(sources)
        self.block, self.perm, self.origin = block, perm, origin


def _shape(x_node: fx.Node) -> torch.Size:
    """The shape `trace` recorded for tensor node `x_node` (batch of one)."""
    return x_node.meta["tensor_meta"].shape


def _reshaped_sizes(shape: tuple, change: Callable[[list], list]) -> tuple:
    """A reshape's shape arguments (sizes, or one tuple of them) with their sizes `change`d
    (a list of them in, a list out)."""
    nested = len(shape) == 1 and isinstance(shape[0], tuple | list)
    sizes = change(list(shape[0] if nested else shape))
    return (tuple(sizes),) if nested else tuple(sizes)


def _replace(gm: fx.GraphModule, node: fx.Node, new: fx.Node, kept: Kept) -> None:
    """Make `new` (inserted before `node`) take `node`'s place: its uses, its kept channels
    and its analysed shapes (channels before pruning); `node` is erased."""
    kept[new.name], new.meta = kept[node.name], node.meta
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _call_new_module(gm: fx.GraphModule, name: str, m: nn.Module, args: tuple) -> fx.Node:
    """A node calling `m`, added to `gm` as submodule `name`, at the graph's insert point."""
    gm.add_submodule(name, m)
    return gm.graph.call_module(name, args)


def _arg(node: fx.Node, i: int, name: str, default: object) -> object:
    """Argument `name` of `node`, passed by keyword or as positional argument `i`."""
    return node.kwargs.get(name, node.args[i] if len(node.args) > i else default)


class OpRule:
    """A function or method that keeps channels apart and maps a zero channel to a zero channel
    (relu, tanh, pooling, interpolation): the sources of its first argument pass through."""

    zero_preserving = True

    def sources(self, node: fx.Node, walk: Walk) -> Sources | None:
        """Sources of the output; None for a result that is not a tensor."""
        return walk.src(node.args[0])

    def tainted(self, node: fx.Node, walk: Walk) -> bool:
        """Whether the output's dead channels may be nonzero (module docstring)."""
        return not self.zero_preserving or any(walk.is_tainted(a) for a in node.all_input_nodes)

    def rewire(self, gm: fx.GraphModule, node: fx.Node, kept: Kept) -> None:
        """Change the pruned graph `gm` around `node` (surgery); most ops need nothing."""


# Elementwise ops that map 0 to 0; may also sit inside a fused norm module (BatchNormRule).
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.SiLU, nn.Mish, nn.GELU,
    nn.Hardswish, nn.Hardtanh, nn.Tanh, nn.Softsign, nn.Identity, nn.Dropout, nn.Dropout2d,
)  # fmt: skip
ELEMENTWISE_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.celu, F.selu, F.silu, F.mish, F.gelu,
    F.hardswish, F.hardtanh, torch.tanh,
)  # fmt: skip
ELEMENTWISE_METHODS = ("relu", "relu_", "tanh", "tanh_", "contiguous")


def is_zero_preserving_elementwise(m: nn.Module) -> bool:
    """Whether `m` acts on each element alone and maps 0 to 0: a known activation, or a
    module whose traced graph holds nothing but such operations (timm's GELU)."""
    if isinstance(m, ELEMENTWISE_MODULES):
        return True
    try:
        graph = fx.symbolic_trace(m).graph
    except Exception:  # not traceable: not provably elementwise
        return False
    for node in graph.nodes:
        if node.op in ("call_function", "call_method"):
            if node.target not in ELEMENTWISE_FUNCTIONS + ELEMENTWISE_METHODS:
                return False
        elif node.op not in ("placeholder", "output"):
            return False
    return True
