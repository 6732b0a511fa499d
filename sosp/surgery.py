"""Apply a pruning mask: softly (zero the pruned weights in place) or physically (build a
smaller network). Both compute the same function in eval mode.

A mask is `{layer_name: sorted pruned output channels}`; internally a list of structure
indices into `StructureGraph.structures`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from sosp.errors import BadInput
from sosp.models.cifar_resnet import ZeroPadShortcut
from sosp.structures import ADD, BATCHNORMS, StructureGraph, slice_params

Mask = dict[str, list[int]]


def mask_from_indices(graph: StructureGraph, pruned: Iterable[int]) -> Mask:
    """{layer_name: sorted pruned channels} for structure indices `pruned`."""
    mask: Mask = {}
    for i in pruned:
        name, c = graph.structures[i]
        mask.setdefault(name, []).append(c)
    return {name: sorted(cs) for name, cs in sorted(mask.items())}


def indices_from_mask(graph: StructureGraph, mask: Mask) -> list[int]:
    """Structure indices of `mask`; a clear error for names or channels that do not exist."""
    index = graph.structure_index()
    out = []
    for name, channels in mask.items():
        if name not in graph.layers:
            raise BadInput(f"mask names layer {name!r}, which the model does not have")
        if not graph.layers[name].prunable:
            raise BadInput(f"mask prunes layer {name!r}, which is not prunable here")
        for c in channels:
            if (name, c) not in index:
                raise BadInput(
                    f"mask prunes channel {c} of {name!r}, which has "
                    f"{graph.layers[name].out_channels} channels"
                )
            out.append(index[(name, c)])
    return out


@torch.no_grad()
def apply_soft_mask(graph: StructureGraph, pruned: Iterable[int]) -> None:
    """Make every dead channel exactly zero, in place: zero theta_s of every pruned structure
    and every per-channel consumer's slice of a dead channel (a BatchNorm without affine
    parameters gets a zero running mean there). Modifies the modules of the model `graph`
    was traced from."""
    alive = graph.alive_writers(pruned)
    for layer in graph.layers.values():
        ids = torch.arange(layer.first_id, layer.first_id + layer.out_channels)
        dead = (~alive[ids]).nonzero().flatten().tolist()
        for name in (layer.name, layer.bn):
            if name is not None:
                _zero_channels(graph.gm.get_submodule(name), dead)
    for consumer in graph.consumers:
        keep = set(graph.kept(consumer.node, alive))
        dead = [c for c in range(len(graph.sources[consumer.node])) if c not in keep]
        _zero_channels(graph.gm.get_submodule(consumer.name), dead)


def _zero_channels(m: nn.Module, channels: list[int]) -> None:
    """Make output channels `channels` of `m` zero for a zero input (and for a writer's, any
    input): zero their weight and bias; a BatchNorm without affine parameters gets a zero
    running mean."""
    for p in slice_params(m):
        p[channels] = 0
    if isinstance(m, BATCHNORMS) and not m.affine:
        m.running_mean[channels] = 0


def soft_masked(model: nn.Module, graph: StructureGraph, pruned: Iterable[int]) -> nn.Module:
    """A copy of `model` (the model `graph` was traced from) with the mask applied softly."""
    masked = copy.deepcopy(model)
    apply_soft_mask(_retarget(graph, masked), pruned)
    return masked


def _retarget(graph: StructureGraph, model: nn.Module) -> StructureGraph:
    """`graph` re-pointed at the modules of `model`, a copy of the original model."""
    gm = fx.GraphModule(model, graph.gm.graph)
    layers = {n: copy.copy(layer) for n, layer in graph.layers.items()}
    for layer in layers.values():
        layer.module = model.get_submodule(layer.name)
    return StructureGraph(
        gm,
        layers,
        graph.consumers,
        graph.sources,
        graph.num_writers,
        graph.structures,
        graph.writer_ids,
    )


class ChannelScatter(nn.Module):
    """Places the C_in channels of x at `positions` of a zero tensor with `size` channels."""

    def __init__(self, positions: Sequence[int], size: int):
        super().__init__()
        self.size = size
        self.register_buffer(
            "positions", torch.tensor(list(positions), dtype=torch.long), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], self.size, *x.shape[2:])
        return out.index_copy(1, self.positions, x)


class Subsample(nn.Module):
    """The spatial part of a zero-padding shortcut, once its padding channels are gone."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


def _sliced(m: nn.Module, out_idx: list[int], in_idx: list[int] | None) -> nn.Module:
    """A copy of Conv2d/Linear/BatchNorm `m` keeping output channels `out_idx` and (for
    groups=1 conv and linear) input channels `in_idx`."""
    m = copy.deepcopy(m)
    device = next(t.device for t in (*m.parameters(), *m.buffers()))
    out_t = torch.tensor(out_idx, dtype=torch.long, device=device)
    with torch.no_grad():
        if isinstance(m, BATCHNORMS):
            if m.affine:
                m.weight = nn.Parameter(m.weight[out_t].clone())
                m.bias = nn.Parameter(m.bias[out_t].clone())
            if m.track_running_stats:
                m.running_mean = m.running_mean[out_t].clone()
                m.running_var = m.running_var[out_t].clone()
            m.num_features = len(out_idx)
            return m
        w = m.weight[out_t]
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise: channels in = out
            m.groups = m.in_channels = len(out_idx)
        elif in_idx is not None:
            w = w[:, torch.tensor(in_idx, dtype=torch.long, device=w.device)]
            if isinstance(m, nn.Conv2d):
                m.in_channels = len(in_idx)
            else:
                m.in_features = len(in_idx)
        m.weight = nn.Parameter(w.clone())
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias[out_t].clone())
        if isinstance(m, nn.Conv2d):
            m.out_channels = len(out_idx)
        else:
            m.out_features = len(out_idx)
    return m


def physical(graph: StructureGraph, pruned: Iterable[int]) -> fx.GraphModule:
    """A new, smaller network (fx GraphModule with the original module names) computing what
    the soft-masked model computes. Pruned channels of a residual stream are scattered back
    into the stream while any writer of the stream channel is alive."""
    alive = graph.alive_writers(pruned)
    kept = {name: graph.kept(name, alive) for name in graph.sources}
    for name, layer in graph.layers.items():
        if not kept[layer.node]:
            raise BadInput(f"the mask prunes every channel of {name!r}; keep at least one")
    gm = copy.deepcopy(graph.gm)
    consumer_nodes = {c.node for c in graph.consumers}
    bn_nodes = {layer.bn for layer in graph.layers.values() if layer.bn}
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if node.target in graph.layers:
                new = _sliced(m, kept[node.name], kept[node.args[0].name])
            elif node.name in consumer_nodes or node.target in bn_nodes:
                new = _sliced(m, kept[node.name], None)
            elif isinstance(m, ZeroPadShortcut):
                new = Subsample(m.stride)
            else:
                continue
            _set_submodule(gm, node.target, new)
        elif node.name in kept and _is_add(node):
            _scatter_inputs(gm, node, kept)
    gm.graph.lint()
    gm.recompile()
    return gm


def _is_add(node: fx.Node) -> bool:
    return node.target in ADD or (node.op == "call_method" and node.target in ("add", "add_"))


def _scatter_inputs(gm: fx.GraphModule, node: fx.Node, kept: dict[str, list[int]]) -> None:
    """Make both operands of residual sum `node` carry its kept channels."""
    out = kept[node.name]
    where = {c: i for i, c in enumerate(out)}
    for k, arg in enumerate(node.args[:2]):
        if kept[arg.name] == out:
            continue
        name = f"{node.name}_scatter{k}"
        gm.add_submodule(name, ChannelScatter([where[c] for c in kept[arg.name]], len(out)))
        with gm.graph.inserting_before(node):
            scattered = gm.graph.call_module(name, (arg,))
        node.replace_input_with(arg, scattered)


def _set_submodule(gm: nn.Module, qualname: str, new: nn.Module) -> None:
    parent, _, child = qualname.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, child, new)
