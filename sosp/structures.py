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

Some slices go with a channel without being part of theta_s, all documented rather than
hidden: a BatchNorm without affine parameters holds none (zeroing W[s], b[s] leaves its
constant -mean/std, which removal drops); a consumer slice of a channel with several writers
(a pre-activation residual stream) belongs to no single structure (it goes when its last
writer goes); and the factor of a product that is zero by the channel's own side goes with it
(a squeeze-and-excitation gate's channel, a `follower`; ConvNeXt's per-channel layer scale).
Zeroing theta_s is still exactly the removal in each case. A BatchNorm with
`track_running_stats=False` normalizes by batch statistics even in eval mode, so samples
interact: it is refused.

A grouped convolution is pruned by whole groups: its rule links group k's input channels
(the writer channels feeding them) with its output channels, and a structure is one class
of linked writer channels. LayerNorms over the channels (ConvNeXt) are norms whose
statistics count a pruned channel as the zero it is; surgery keeps counting it.

The model is traced with torch.fx and every tensor's channel dimension (dim 1) is annotated
with the set of writer channels that contribute to each of its channels: a residual sum takes
the union, a concatenation appends, a zero-padding shortcut shifts. A channel is *alive* while
any of its writers is alive, and a dead channel is exactly zero (only zero-preserving
operations are admitted between writers; an op that maps zero elsewhere, like a sigmoid,
*taints* its output, which may then only gate a feature map by a product). Ops that act per
channel on a tensor they do not write (a pre-activation BatchNorm, a depthwise convolution)
are *consumers*: their slice of a dead channel is zeroed by the soft mask and removed by
surgery. What each operation is and how
it maps channels is its rule in `sosp.channel_rules`; an operation without one fails loudly.

`coupling` chooses what one structure is. "filter" (the paper's): one writer channel. "stream":
one channel of a residual stream with all the writer channels that write it (every channel
whose sources hold several writers couples them; a zero-padding shortcut carries the coupling
into the wider stage), as Torch-Pruning and most ResNet pruning papers do; a stream channel
with a writer that is not prunable (an excluded downsampling conv, an input channel) is not
pruned. theta_s is then the union of its writers' slices (and of consumer slices of its
channels), so the saliencies and the gate identity hold unchanged, and pruning a structure
empties its stream channel: surgery shrinks the stream and needs no scatter. A mask is always
{layer: channels}, whatever the coupling.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from sosp.attention import heads_visible
from sosp.channel_rules import (
    MODULE_RULES,
    NAMED_MODULE_RULES,
    Role,
    Sources,
    Unsupported,
    module_rule,
    op_rule,
    qualified_name,
    unsupported,
)
from sosp.channel_rules import slice_params as slice_params  # re-exported: theta slices
from sosp.errors import BadInput
from sosp.modes import eval_mode

COUPLINGS = ("filter", "stream")

# The SOSP paper's exclusion for ResNets: the downsampling path is never pruned.
PRESETS: dict[str, list[str]] = {
    "resnet_downsample": ["*shortcut*", "*downsample*"],
    "none": [],
}


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
        return module_rule(self.module).out_channels(self.module)

    @property
    def holder(self) -> nn.Module:
        """The module whose weight and bias (dim 0: output channels) hold the layer's theta_s:
        the layer itself, or an attention block's output projection."""
        part = module_rule(self.module).theta_part(self.module)
        return self.module.get_submodule(part) if part else self.module

    @property
    def theta_module(self) -> str:
        """The module holding the layer's theta_s (its own name, or an attention block's
        output projection's)."""
        part = module_rule(self.module).theta_part(self.module)
        return f"{self.name}.{part}" if part else self.name

    @property
    def kernel_side(self) -> float:
        """The kernel's side length (1, 3, 7; sqrt(k_h k_w) for a non-square kernel, 1 for a
        Linear or an attention block): what SOSP* divides saliencies by."""
        w = getattr(self.module, "weight", None)
        return float(w[0, 0].numel()) ** 0.5 if w is not None and w.dim() > 2 else 1.0


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

    `members[i]`: the writer ids of structure i (one; a coupled stream channel's; a group's);
    `structures[i] = (layer_name, channel)`: the first of them, its name; both in graph order.
    `theta` lists where the parameters of every structure live (module docstring).
    """

    gm: fx.GraphModule
    layers: dict[str, Layer]
    consumers: list[Consumer]
    sources: dict[str, Sources]
    num_writers: int
    structures: list[tuple[str, int]] = field(default_factory=list)
    members: list[tuple[int, ...]] = field(default_factory=list)
    theta: list[ThetaSlice] = field(default_factory=list)
    # writer id -> the ids it follows: alive exactly while one of them is (a SE gate's channel)
    followers: dict[int, frozenset[int]] = field(default_factory=dict)

    def structure_index(self) -> dict[tuple[str, int], int]:
        return {s: i for i, s in enumerate(self.structures)}

    def alive_writers(self, pruned: Iterable[int]) -> list[bool]:
        """Per writer id: False exactly for the writer channels of the pruned structures (and
        the followers of nothing alive)."""
        alive = [True] * self.num_writers
        for i in pruned:
            for w in self.members[i]:
                alive[w] = False
        for f, leaders in self.followers.items():
            alive[f] = any(alive[w] for w in leaders)
        return alive

    def kept(self, node: str, alive: list[bool]) -> list[int]:
        """Channels of tensor `node` with at least one alive writer, in order."""
        return [c for c, src in enumerate(self.sources[node]) if any(alive[i] for i in src)]

    def writer_channel(self, writer: int) -> tuple[str, int]:
        """(layer name, output channel) of writer id `writer`."""
        firsts, layers = self._layers_by_first_id
        layer = layers[bisect.bisect_right(firsts, writer) - 1]
        if not layer.first_id <= writer < layer.first_id + layer.out_channels:
            raise KeyError(f"writer {writer} is not the output of a layer")
        return layer.name, writer - layer.first_id

    @functools.cached_property
    def _layers_by_first_id(self) -> tuple[list[int], list[Layer]]:
        layers = sorted(self.layers.values(), key=lambda layer: layer.first_id)
        return [layer.first_id for layer in layers], layers

    def member_channels(self, i: int) -> list[tuple[str, int]]:
        """(layer name, channel) of every writer channel structure i removes."""
        return [self.writer_channel(w) for w in self.members[i]]

    def layer_structures(self) -> dict[str, list[int]]:
        """Layer name -> indices (into `structures`) of its structures: those named after one
        of its channels (a coupled stream channel counts for its first writer's layer)."""
        out: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(self.structures):
            out.setdefault(name, []).append(i)
        return out

    def selection_groups(self) -> list[list[int]]:
        """Indices of the structures in groups of which every mask keeps at least one, in
        structure order: each layer's (`layer_structures`), split where layers read different
        parts of its output (the pieces of a split, as in a Res2Net block), since pruning all
        of one part would leave a layer that reads it without input channels."""
        owner = {w: i for i, members in enumerate(self.members) for w in members}
        nodes = {node.name: node for node in self.gm.graph.nodes}
        readers: list[set[str]] = [set() for _ in self.structures]
        for name, layer in self.layers.items():
            for channel in self.sources.get(nodes[layer.node].args[0].name, ()):
                for w in channel:
                    if w in owner:
                        readers[owner[w]].add(name)
        groups: dict[tuple[str, frozenset[str]], list[int]] = {}
        for i, (layer, _) in enumerate(self.structures):
            groups.setdefault((layer, frozenset(readers[i])), []).append(i)
        return list(groups.values())

    def exchangeable(self) -> list[list[tuple[int, ...]]]:
        """Groups of units that a shuffle may exchange and leave the pruned architecture as it
        is. A unit is a class of structures linked by sharing a tensor channel (a residual
        stream channel's filters under "filter" coupling; one structure otherwise), in index
        order; units are exchangeable where they sit alike: the same layers at each position
        and, at every node, the same channels by the positions writing them (a gate's channel
        counts for its leaders). Every structure lies in one unit; groups in structure order."""
        owner = {w: i for i, members in enumerate(self.members) for w in members}

        @functools.cache
        def owned(channel: frozenset[int]) -> frozenset[int]:
            leaders = [w for f in channel for w in self.followers.get(f, ())]
            return frozenset(owner[w] for w in (*channel, *leaders) if w in owner)

        by_node = {node: [owned(c) for c in src] for node, src in self.sources.items()}
        units = _connected(len(self.members), (o for chans in by_node.values() for o in chans))
        place = {s: (u, pos) for u, unit in enumerate(units) for pos, s in enumerate(unit)}
        shape: list[dict[str, list[tuple[int, ...]]]] = [{} for _ in units]
        for node, chans in by_node.items():
            for o in filter(None, chans):
                u = place[next(iter(o))][0]
                shape[u].setdefault(node, []).append(tuple(sorted(place[s][1] for s in o)))
        groups: dict[tuple, list[tuple[int, ...]]] = {}
        for u, unit in enumerate(units):
            layers = tuple(tuple(self.writer_channel(w)[0] for w in self.members[s]) for s in unit)
            seen = tuple(sorted((node, tuple(sorted(p))) for node, p in shape[u].items()))
            groups.setdefault((layers, seen), []).append(unit)
        return list(groups.values())


class _Tracer(fx.Tracer):
    """Keeps every module that has a channel rule as one node: those of a ruled type (and
    library modules named in the table), every BatchNorm subclass (timm's BatchNormAct2d: a
    norm with its activation fused), whose rule checks what it holds, and a subclass of
    Conv2d or Linear that computes what its base class does on a random input (timm's
    Linear). Other subclasses are traced into: their forward differs (a weight-standardized
    conv)."""

    def __init__(self, model: nn.Module | None = None, opened: Sequence[nn.Module] = ()):
        # `model` is optional: unpickling a GraphModule re-traces its code with its tracer's
        # class called without arguments (torch.load of a pruned network); it then keeps
        # every module as a leaf itself. `opened`: attention modules traced into.
        super().__init__()
        leaves = model.modules() if model is not None else ()
        inside = {id(m) for m in opened}
        self.leaves = {id(m) for m in leaves if _is_ruled_leaf(m) and id(m) not in inside}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return id(m) in self.leaves or super().is_leaf_module(m, qualname)


def _is_ruled_leaf(m: nn.Module) -> bool:
    return module_rule(m) is not None and (
        type(m) in MODULE_RULES
        or qualified_name(type(m)) in NAMED_MODULE_RULES
        or isinstance(m, nn.modules.batchnorm._BatchNorm)
        or _computes_as_base(m)
    )


@torch.no_grad()
def _computes_as_base(m: nn.Module) -> bool:
    """Whether a Conv2d, Linear, LayerNorm or GroupNorm subclass `m` computes its base class's
    function (timm's Linear, LayerNorm and GroupNorm1 do)."""
    p = getattr(m, "weight", None)
    kinds = nn.Conv2d | nn.Linear | nn.LayerNorm | nn.GroupNorm
    if p is None or p.is_meta or not isinstance(m, kinds):
        return False
    g = torch.Generator().manual_seed(0)
    if isinstance(m, nn.GroupNorm):
        x = torch.randn(2, m.num_channels, 3, 3, generator=g).to(p.device, p.dtype)
        want = F.group_norm(x, m.num_groups, p, m.bias, m.eps)
    elif isinstance(m, nn.LayerNorm):
        x = torch.randn(2, 3, *m.normalized_shape, generator=g).to(p.device, p.dtype)
        want = F.layer_norm(x, m.normalized_shape, p, m.bias, m.eps)
    elif isinstance(m, nn.Linear):
        x = torch.randn(2, m.in_features, generator=g).to(p.device, p.dtype)
        want = F.linear(x, p, m.bias)
    else:
        side = 2 * max(d * (k - 1) + 1 for d, k in zip(m.dilation, m.kernel_size, strict=True)) + 4
        x = torch.randn(1, m.in_channels, side, side, generator=g).to(p.device, p.dtype)
        want = nn.Conv2d._conv_forward(m, x, p, m.bias)
    try:
        return torch.allclose(m(x), want, rtol=1e-4, atol=1e-5)
    except Exception:  # a forward that needs more than one tensor
        return False


def trace(model: nn.Module, input_shape: Sequence[int]) -> fx.GraphModule:
    """fx GraphModule of `model` (sharing its modules) with tensor shapes of one sample
    [1, *input_shape] recorded on every node."""
    check_model(model)
    try:
        # training-only branches (drop paths) are not analysed; attention heads are visible
        with eval_mode(model), heads_visible(model) as opened:
            tracer = _Tracer(model, opened)
            graph = tracer.trace(model)
    except Exception as e:  # fx raises many types for data-dependent control flow
        where = next(reversed(tracer.module_stack), "")  # the module whose forward failed
        inside = f" in module {where!r} ({type(model.get_submodule(where)).__name__})"
        raise Unsupported(
            f"cannot trace {type(model).__name__} with torch.fx{inside if where else ''}: {e}"
        ) from e
    gm = fx.GraphModule(model, graph)
    # run once first: ShapeProp prints the traceback of an error before wrapping it
    check_runs(gm, input_shape, type(model).__name__)
    p = next(model.parameters())
    with eval_mode(model):
        ShapeProp(gm).propagate(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    return gm


def check_runs(model: nn.Module, input_shape: Sequence[int], name: str | None = None) -> None:
    """Raise `BadInput` unless `model` (in eval mode, called `name`) runs on one sample of
    `input_shape`, saying how to create it for the data."""
    p = next(model.parameters())
    x = torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device)
    with eval_mode(model), torch.no_grad():
        try:
            model(x)
        except Exception as e:  # whatever the model's own code raises on this shape
            first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            raise BadInput(
                f"{name or type(model).__name__} does not run on inputs of shape "
                f"{tuple(input_shape)} (one sample; {first}); create the model for this data, "
                "e.g. models.create(name, num_classes, in_channels=C, image_size=H) with the "
                "data's C and H (digits: in_channels=1, image_size=8)"
            ) from e


def check_model(model: object) -> None:
    """Raise `BadInput` unless `model` is a network sosp can trace: an `nn.Module` with
    parameters, not wrapped for data parallelism (whose forward scatters over devices)."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        raise BadInput(
            f"the model is wrapped in {type(model).__name__}; pass the network inside it "
            "(model.module) and wrap the pruned network again to train it in parallel"
        )
    if not isinstance(model, nn.Module):
        hint = f": create it first, sosp.models.create({model!r}, ...)" * isinstance(model, str)
        raise BadInput(f"model must be a torch.nn.Module, not {type(model).__name__}{hint}")
    if next(model.parameters(), None) is None:
        raise BadInput(
            f"{type(model).__name__} has no parameters, so nothing to prune; pass a network "
            "with Conv2d or Linear layers"
        )


def exclusion_patterns(exclude: str | Sequence[str] | None) -> list[str]:
    """Module-name patterns (fnmatch) from a preset name, a pattern, or a list of them."""
    if exclude is None:
        return []
    items = [exclude] if isinstance(exclude, str) else list(exclude)
    return [p for item in items for p in PRESETS.get(item, [item])]


def analyze(
    model: nn.Module,
    input_shape: Sequence[int],
    exclude: str | Sequence[str] | None = None,
    coupling: str = "filter",
) -> StructureGraph:
    """Trace `model` on inputs of shape `input_shape` (C, H, W) and find its structures.

    `exclude`: fnmatch patterns of module names never pruned, or a preset name from `PRESETS`.
    `coupling`: "filter" or "stream", what one structure is (module docstring).
    Raises `Unsupported` naming the first node whose channel semantics are unknown.
    """
    if coupling not in COUPLINGS:
        raise BadInput(f"coupling must be one of {', '.join(COUPLINGS)}, not {coupling!r}")
    gm = trace(model, input_shape)
    return _Analysis(gm, exclusion_patterns(exclude), coupling).run()


class _Analysis:
    """One walk over the graph in order (the `channel_rules.Walk` its rules see)."""

    def __init__(self, gm: fx.GraphModule, exclude: list[str], coupling: str = "filter"):
        self.gm, self.exclude, self.coupling = gm, exclude, coupling
        self.modules = dict(gm.named_modules())
        self.sources: dict[str, Sources] = {}
        self.layers: dict[str, Layer] = {}
        self.consumers: list[Consumer] = []
        self.num_writers = 0
        self.links: list[frozenset[int]] = []  # writer ids pruned only together (groups)
        self.tainted: dict[str, str] = {}  # node -> the node whose op tainted it
        self.ties: list[tuple[fx.Node, fx.Node, fx.Node]] = []  # (product, value, gate)
        self.clean_reads: list[tuple[fx.Node, fx.Node]] = []  # (reader, tainted tensor)
        self.parameters: set[str] = set()  # nodes that read a parameter (or reshape one)
        self.input_ids: set[int] = set()  # ids of the input's channels, and of ops on them alone
        self.whole_reads: list[tuple[fx.Node, fx.Node]] = []  # (module, input) needing all
        self.input_only_errors: list[Unsupported] = []  # what ops on them alone would have raised

    # -- the Walk protocol ------------------------------------------------------------------
    def src(self, arg) -> Sources:
        if self.is_parameter(arg):
            raise Unsupported(
                f"the model reads a parameter outside a module (node {arg.name!r}); only a "
                "per-channel scale (x * p, ConvNeXt's layer scale) has a rule"
            )
        if not isinstance(arg, fx.Node) or arg.name not in self.sources:
            raise Unsupported(f"expected a tensor produced by the network, got {arg!r}")
        return self.sources[arg.name]

    def is_tainted(self, arg) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.tainted

    def is_parameter(self, arg) -> bool:
        return isinstance(arg, fx.Node) and arg.name in self.parameters

    def link(self, groups: Iterable[frozenset[int]]) -> None:
        self.links += list(groups)

    def tie(self, node: fx.Node, value: fx.Node, gate: fx.Node) -> None:
        if len(self.src(gate)) == len(self.src(value)):
            self.ties.append((node, value, gate))
        elif len(self.src(gate)) == 1:  # one gate for all channels: it must never go
            self.clean_reads.append((node, gate))
        else:
            raise unsupported(node, "a gate whose channels are not the feature map's")

    # -- helpers --------------------------------------------------------------------------
    def new_writers(self, n: int) -> Sources:
        first = self.num_writers
        self.num_writers += n
        return [frozenset([first + c]) for c in range(n)]

    def taint_origin(self, node: fx.Node) -> str:
        """The node whose op tainted an input of `node`, or `node` itself."""
        return next(
            (self.tainted[a.name] for a in node.all_input_nodes if a.name in self.tainted),
            node.name,
        )

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> StructureGraph:
        for node in self.gm.graph.nodes:
            out = self.visit(node)
            if out is not None:
                self.sources[node.name] = out
        self.mark_classifiers()
        followers = self.followers()
        g = StructureGraph(self.gm, self.layers, self.consumers, self.sources, self.num_writers)
        g.followers = followers
        for members in self.structure_members(followers):
            g.members.append(members)
            g.structures.append(g.writer_channel(members[0]))
        if not g.structures and self.input_only_errors:  # all of it read the input "alone"
            raise self.input_only_errors[0]
        if not g.structures:
            raise BadInput("the model has no prunable structures (all layers excluded?)")
        self.check_clean_reads(g)
        self.check_whole_reads(g)
        g.theta = self.theta_slices(g)
        return g

    def structure_members(self, followers: dict[int, frozenset[int]]) -> list[tuple[int, ...]]:
        """The writer ids of each structure, in graph order: every channel of a prunable layer
        alone ("filter"), or the coupled stream channels whose writers are all prunable; in
        both, the channels a grouped convolution links go together."""
        prunable = {
            layer.first_id + c
            for layer in self.layers.values()
            if layer.prunable
            for c in range(layer.out_channels)
        } - followers.keys()
        links = list(self.links)
        if self.coupling == "stream":
            links += [s for src in self.sources.values() for s in src]
        groups = _connected(self.num_writers, links)
        return [g for g in groups if prunable.issuperset(g)]

    def followers(self) -> dict[int, frozenset[int]]:
        """Writer id -> the ids it follows, from the gating products (`tie`): channel c of a
        gate follows channel c of the feature map it gates. Fails unless each follower is a
        layer's output channel read only on the way to its gate."""
        out: dict[int, set[int]] = {}
        tie_of: dict[int, fx.Node] = {}  # follower -> its product node
        for node, value, gate in self.ties:
            for leaders, gated in zip(self.src(value), self.src(gate), strict=True):
                for f in gated - leaders:
                    out.setdefault(f, set()).update(leaders)
                    tie_of[f] = node
        if not out:
            return {}
        layer_ids = {
            layer.first_id + c for layer in self.layers.values() for c in range(layer.out_channels)
        }
        for f, leaders in out.items():
            if f not in layer_ids or leaders & out.keys():
                raise unsupported(tie_of[f], "its gate is not computed by layers of its own")
        on_gate_paths = _ancestors([gate for _, _, gate in self.ties])
        for node in self.gm.graph.nodes:
            src = self.sources.get(node.name, ())
            if node.name not in on_gate_paths and any(out.keys() & s for s in src):
                raise unsupported(node, "it reads a gate's channels outside the gate's product")
        for layer in self.layers.values():
            if all(layer.first_id + c in out for c in range(layer.out_channels)):
                layer.prunable = False
        return {f: frozenset(leaders) for f, leaders in out.items()}

    def check_clean_reads(self, g: StructureGraph) -> None:
        """Fail where a tainted tensor with channels that can go is read other than as a gate
        (by a layer, a sum, the output): its pruned channels are not zero there."""
        dying = {w for members in g.members for w in members} | g.followers.keys()
        for reader, t in self.clean_reads:
            if any(s & dying for s in self.sources[t.name]):
                raise unsupported(
                    reader,
                    f"it reads {t.name!r}, which passed {self.tainted[t.name]!r}, an op that "
                    "maps zero to nonzero, so pruned channels are not zero there; such a "
                    "tensor may only gate a feature map by a product (x * sigmoid(...))",
                )

    def check_whole_reads(self, g: StructureGraph) -> None:
        """Fail where a module that needs all of its input channels (`reads_whole`) reads a
        channel that pruning can remove (all of whose writers are structures)."""
        dying = {w for members in g.members for w in members} | g.followers.keys()
        for reader, t in self.whole_reads:
            if any(s <= dying for s in self.sources[t.name]):
                raise unsupported(
                    reader,
                    f"it needs every channel of {t.name!r}, and pruning can remove some; "
                    "exclude the layers that write them",
                )

    def theta_slices(self, g: StructureGraph) -> list[ThetaSlice]:
        """Where theta_s lives: the writers, their affine private BNs, and consumer slices of
        channels all of whose writers belong to one structure."""
        structure_of = {w: i for i, members in enumerate(g.members) for w in members}
        out = []
        for layer in self.layers.values():
            owned = [
                (c, structure_of[layer.first_id + c])
                for c in range(layer.out_channels)
                if layer.first_id + c in structure_of
            ]
            if not owned:
                continue
            channels, idx = zip(*owned, strict=True)
            out.append(ThetaSlice(layer.theta_module, channels, idx))
            if layer.bn is not None and _has_params(self.modules[layer.bn]):
                out.append(ThetaSlice(layer.bn, channels, idx))
        for consumer in self.consumers:
            if not _has_params(self.modules[consumer.name]):
                continue
            owners = [{structure_of.get(w) for w in src} for src in self.sources[consumer.node]]
            owned = [
                (c, next(iter(o))) for c, o in enumerate(owners) if len(o) == 1 and None not in o
            ]
            if owned:
                channels, idx = zip(*owned, strict=True)
                out.append(ThetaSlice(consumer.name, channels, idx))
        return out

    def visit(self, node: fx.Node) -> Sources | None:
        if node.op == "placeholder":  # input channels: writers that are always alive
            # (an optional argument left at its default, e.g. an attention mask, holds none)
            return self.inputs_like(node) if "tensor_meta" in node.meta else None
        if node.op == "output":
            self.clean_reads += [(node, a) for a in node.all_input_nodes if self.is_tainted(a)]
            return None
        if "tensor_meta" not in node.meta:  # a size, a shape, arithmetic on them
            return None
        inputs = [a for a in node.all_input_nodes if "tensor_meta" in a.meta or a.op == "get_attr"]
        if node.op == "get_attr" or (inputs and all(self.is_parameter(a) for a in inputs)):
            self.parameters.add(node.name)  # read by a rule (MulRule) or refused by `src`
            return None
        try:
            if node.op == "call_module":
                return self.visit_module(node, self.modules[node.target])
            return self.visit_function(node)
        except Unsupported as e:
            if not self.reads_only_inputs(node):
                raise
            self.input_only_errors.append(e)
            return self.inputs_like(node)

    def reads_only_inputs(self, node: fx.Node) -> bool:
        """Whether every channel `node` reads comes from the network's input alone (nothing
        before it can be pruned: any op is safe there, e.g. TResNet's space-to-depth)."""
        tensors = [a for a in node.all_input_nodes if a.name in self.sources]
        return bool(tensors) and all(
            ids <= self.input_ids for a in tensors for ids in self.sources[a.name]
        )

    def inputs_like(self, node: fx.Node) -> Sources:
        """Fresh channels that are never pruned, like the input's, for `node`'s output."""
        shape = node.meta["tensor_meta"].shape
        return self.constants(shape[1] if len(shape) > 1 else 1)

    def constants(self, n: int) -> Sources:
        out = self.new_writers(n)
        self.input_ids.update(w for ids in out for w in ids)
        return out

    def visit_module(self, node: fx.Node, m: nn.Module) -> Sources:
        rule = module_rule(m)
        if rule is None:
            raise unsupported(node, f"module type {type(m).__name__} is not supported")
        x = rule.input_of(node, m)
        if rule.reads_whole:
            self.whole_reads.append((node, x))
        role = rule.role(node, m)
        if role is Role.WRITER:
            src = self.src(x)
            out = rule.written(node, m, src, self.writer(node, m))
            self.links += rule.links(m, src, out)
            if self.is_tainted(x):
                self.clean_reads.append((node, x))
            return out
        if role is Role.NORM:
            self.attach_norm(node, x)
        elif role is Role.CONSUMER:
            self.consumers.append(Consumer(node.target, node.name))
        if not rule.zero_preserving or self.is_tainted(x):
            self.tainted[node.name] = self.taint_origin(node)
        return rule.sources(node, m, self.src(x))

    def visit_function(self, node: fx.Node) -> Sources | None:
        rule = op_rule(node)
        if rule is None:
            raise unsupported(node, "operation not supported")
        out = rule.sources(node, self)
        if rule.tainted(node, self):
            self.tainted[node.name] = self.taint_origin(node)
        return out

    def writer(self, node: fx.Node, m: nn.Module) -> Sources:
        sources = self.new_writers(module_rule(m).out_channels(m))
        prunable = not any(fnmatch.fnmatchcase(node.target, p) for p in self.exclude)
        first = next(iter(sources[0]))
        self.layers[node.target] = Layer(node.target, m, node.name, None, prunable, first)
        return sources

    def attach_norm(self, node: fx.Node, x) -> None:
        """Make norm `node` the private BN of the writer whose output only it reads, or else
        (that writer has one already, or there is none) a consumer."""
        writer = self.private_writer(x)
        if writer is not None and self.layers[writer].bn is None:
            self.layers[writer].bn = node.target
        else:
            self.consumers.append(Consumer(node.target, node.name))

    def private_writer(self, x) -> str | None:
        """The writer layer whose output is `x` and used by nothing else, if any."""
        if isinstance(x, fx.Node) and x.op == "call_module" and x.target in self.layers:
            if len(x.users) == 1:
                return x.target
        return None

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


def _connected(n: int, links: Iterable[frozenset[int]]) -> list[tuple[int, ...]]:
    """The classes of ids 0 .. n-1 under "the ids of each link belong together", each sorted,
    ordered by their smallest id (union-find)."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for link in links:
        if len(link) < 2:
            continue
        first, *rest = link
        for other in rest:
            parent[root(other)] = root(first)
    classes: dict[int, list[int]] = {}
    for i in range(n):
        classes.setdefault(root(i), []).append(i)
    return sorted((tuple(c) for c in classes.values()), key=lambda c: c[0])


def _ancestors(nodes: Iterable[fx.Node]) -> set[str]:
    """Names of `nodes` and of every node they are computed from."""
    seen: set[str] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node.name not in seen:
            seen.add(node.name)
            stack.extend(node.all_input_nodes)
    return seen


def _has_params(m: nn.Module) -> bool:
    """Whether `m` has a weight (an affine BatchNorm, a convolution)."""
    return getattr(m, "weight", None) is not None
