"""Apply a pruning mask: softly (zero the pruned weights in place) or by building a smaller
network. Both compute the same function in eval mode; what each module becomes is its rule in
`sosp.channel_rules` (`zero`, `shrink`, `rewire`).

A mask is `{layer_name: sorted pruned output channels}`; internally a list of structure
indices into `StructureGraph.structures`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable

import torch
import torch.fx as fx
from torch import nn

from sosp.channel_rules import module_rule, op_rule
from sosp.errors import BadInput
from sosp.liveness import allow_overwrites
from sosp.shortcuts import ChannelGather, ChannelScatter, IndexAdd
from sosp.structures import StructureGraph

Mask = dict[str, list[int]]


def mask_from_indices(graph: StructureGraph, pruned: Iterable[int]) -> Mask:
    """{layer_name: sorted pruned channels} for structure indices `pruned` (every channel of
    each, for coupled structures)."""
    mask: Mask = {}
    for i in pruned:
        for name, c in graph.member_channels(i):
            mask.setdefault(name, []).append(c)
    return {name: sorted(cs) for name, cs in sorted(mask.items())}


def indices_from_mask(graph: StructureGraph, mask: Mask) -> list[int]:
    """Structure indices of `mask`; a clear error for names or channels that do not exist, and
    for a mask that prunes part of a coupled structure."""
    owner = {graph.writer_channel(w): i for i, members in enumerate(graph.members) for w in members}
    out: dict[int, int] = {}  # structure -> its channels the mask names
    for name, channels in mask.items():
        if name not in graph.layers:
            raise BadInput(f"mask names layer {name!r}, which the model does not have")
        if not graph.layers[name].prunable:
            raise BadInput(f"mask prunes layer {name!r}, which is not prunable here")
        for c in channels:
            if not 0 <= c < graph.layers[name].out_channels:
                raise BadInput(
                    f"mask prunes channel {c} of {name!r}, which has "
                    f"{graph.layers[name].out_channels} channels"
                )
            if (name, c) not in owner:
                raise BadInput(
                    f"mask prunes channel {c} of {name!r}, which belongs to no structure "
                    "under this coupling (a stream channel with a writer that is not prunable)"
                )
            i = owner[(name, c)]
            out[i] = out.get(i, 0) + 1
    for i, named in out.items():
        if named != len(graph.members[i]):
            raise BadInput(
                f"mask prunes {named} of the {len(graph.members[i])} channels of one coupled "
                f"structure (a stream channel, or a grouped conv's group) "
                f"{graph.member_channels(i)}; prune all of them (a stream channel alone: "
                "coupling='filter')"
            )
    return list(out)


@torch.no_grad()
def apply_soft_mask(graph: StructureGraph, pruned: Iterable[int]) -> None:
    """Make every dead channel exactly zero, in place: zero theta_s of every pruned structure
    and every per-channel consumer's slice of a dead channel (a BatchNorm without affine
    parameters gets a zero running mean there). Modifies the modules of the model `graph`
    was traced from."""
    alive = graph.alive_writers(pruned)
    for layer in graph.layers.values():
        dead = [c for c in range(layer.out_channels) if not alive[layer.first_id + c]]
        for name in (layer.name, layer.bn):
            if name is not None:
                _zero_channels(graph, name, dead)
    for consumer in graph.consumers:
        keep = set(graph.kept(consumer.node, alive))
        dead = [c for c in range(len(graph.sources[consumer.node])) if c not in keep]
        _zero_channels(graph, consumer.name, dead)


def _zero_channels(graph: StructureGraph, name: str, channels: list[int]) -> None:
    m = graph.gm.get_submodule(name)
    module_rule(m).zero(m, channels)


def soft_masked(model: nn.Module, graph: StructureGraph, pruned: Iterable[int]) -> nn.Module:
    """A copy of `model` (the model `graph` was traced from) with the mask applied softly."""
    masked = copy.deepcopy(model)
    apply_soft_mask(_retarget(graph, masked), pruned)
    return masked


def _retarget(graph: StructureGraph, model: nn.Module) -> StructureGraph:
    """`graph` re-pointed at the modules of `model`, a copy of the original model."""
    layers = {n: copy.copy(layer) for n, layer in graph.layers.items()}
    for layer in layers.values():
        layer.module = model.get_submodule(layer.name)
    return dataclasses.replace(graph, gm=fx.GraphModule(model, graph.gm.graph), layers=layers)


def build_pruned(graph: StructureGraph, pruned: Iterable[int]) -> fx.GraphModule:
    """A new, smaller network (fx GraphModule with the original module names) computing what
    the soft-masked model computes. Every module is rebuilt for the channels it keeps; pruned
    channels of a residual stream stay in the stream while any writer of the stream channel is
    alive: a branch that keeps fewer of them is added in by index (`channel_rules.AddRule`),
    into the stream's own memory where nothing reads it later (`liveness`, without autograd)."""
    alive = graph.alive_writers(pruned)
    kept = {name: graph.kept(name, alive) for name in graph.sources}
    nodes = {node.name: node for node in graph.gm.graph.nodes}
    for name, layer in graph.layers.items():
        if not kept[layer.node]:
            raise BadInput(f"the mask prunes every channel of {name!r}; keep at least one")
        if not kept[nodes[layer.node].args[0].name]:
            raise BadInput(
                f"the mask prunes every input channel of {name!r} (all channels of the tensor "
                "it reads, e.g. one piece of a split); keep at least one of them"
            )
    shrunk = {}  # id of a module of graph.gm -> its smaller copy
    for node in graph.gm.graph.nodes:
        if node.op == "call_module":
            m = graph.gm.get_submodule(node.target)
            rule = module_rule(m)  # None: an op on the input alone, which keeps everything
            new = rule and rule.shrink(m, kept[node.name], kept[node.args[0].name])
            if new is not None:
                shrunk[id(m)] = new
    gm = copy.deepcopy(graph.gm, memo=shrunk)  # the shrunk modules in place, not copied
    for node in list(gm.graph.nodes):
        if node.op in ("call_function", "call_method") and node.name in kept:
            rule = op_rule(node)
            if rule is not None:
                rule.rewire(gm, node, kept)
    allow_overwrites(gm)
    gm.graph.lint()
    gm.recompile()
    return _on_parameter_device(gm)


def _on_parameter_device(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with the buffers of the modules surgery inserted (made on the CPU) moved to the
    device of its parameters, so that the pruned copy of a GPU model runs on the GPU."""
    p = next(gm.parameters(), None)
    if p is not None:
        for m in gm.modules():
            if isinstance(m, ChannelScatter | IndexAdd | ChannelGather):
                m.to(p.device)
    return gm
