"""Which residual sums of a pruned network may add their branch into the stream's own memory.

Surgery turns a residual sum whose branch keeps fewer channels than its stream into an
`IndexAdd`, which adds into a copy of the stream: the stream may be read again later. Where
nothing reads the stream's memory after the sum, the copy is a wasted pass over the network's
widest tensor (on the CPU as much time as the dense add itself). `allow_overwrites` finds
those sums by looking at the fx graph:

- the stream's memory is traced back to the node that allocated it, through the ops that
  return their input itself (identities, in-place ops, sums already allowed to overwrite);
  an op not known to allocate new memory (a view, an unknown op) or a graph input or
  attribute ends the search without permission;
- every node sharing that memory then has all its readers before the sum, and each of those
  readers allocates its own output (a view read before the sum could be read after it).

The permission takes effect only without autograd (`IndexAdd.overwrite`): a backward pass may
need the stream (a conv saves its input)."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from sosp.shortcuts import ChannelScatter, IndexAdd

# Modules and functions whose output is newly allocated memory, never a view of an input;
# activations count only with inplace=False.
NEW_MEMORY_MODULES = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    ChannelScatter,
)
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)
ACTIVATION_FUNCTIONS = {F.relu, F.relu6, F.silu, F.hardswish, F.leaky_relu, F.elu}
NEW_MEMORY_FUNCTIONS = {
    operator.add,
    operator.mul,
    torch.add,
    torch.mul,
    torch.cat,
    torch.relu,
    torch.sigmoid,
    F.conv2d,
    F.linear,
    F.batch_norm,
    F.adaptive_avg_pool2d,
    F.max_pool2d,
    F.avg_pool2d,
}
NEW_MEMORY_METHODS = {"add", "mul", "relu", "sigmoid", "clone"}
IN_PLACE_FUNCTIONS = {operator.iadd, operator.imul, torch.relu_}
IN_PLACE_METHODS = {"add_", "mul_", "relu_", "clamp_", "clamp_min_"}

NEW = "new"  # the node's output is new memory
UNKNOWN = "unknown"  # it may share memory in a way not followed here


def memory_of(gm: fx.GraphModule, node: fx.Node) -> str | fx.Node:
    """Where `node`'s output lives: NEW, the input node whose memory it is (an op returning its
    input itself), or UNKNOWN."""
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, IndexAdd):
            return first if (m.inplace or m.overwrite) else NEW
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Sequential) and len(m) == 0):
            return first
        if isinstance(m, ACTIVATION_MODULES):
            return first if m.inplace else NEW
        return NEW if isinstance(m, NEW_MEMORY_MODULES) else UNKNOWN
    if node.op == "call_function":
        if node.target in ACTIVATION_FUNCTIONS:
            return first if node.kwargs.get("inplace", False) else NEW
        if node.target in IN_PLACE_FUNCTIONS:
            return first
        return NEW if node.target in NEW_MEMORY_FUNCTIONS else UNKNOWN
    if node.op == "call_method":
        if node.target in IN_PLACE_METHODS:
            return first
        return NEW if node.target in NEW_MEMORY_METHODS else UNKNOWN
    return UNKNOWN  # placeholder, get_attr: memory the caller or the module owns


def allocation_of(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The node that allocated `node`'s memory, or None where that is not known."""
    while True:
        where = memory_of(gm, node)
        if where == NEW:
            return node
        if where == UNKNOWN or where is None:
            return None
        node = where


def overwrite_is_safe(gm: fx.GraphModule, node: fx.Node, position: dict[fx.Node, int]) -> bool:
    """Whether the IndexAdd `node` may add into its stream (args[0]): nothing reads the
    stream's memory after `node`, and the branch is not that memory (`position`: each node's
    index in graph order)."""
    stream, branch = node.args[:2]
    root = allocation_of(gm, stream)
    if root is None or not isinstance(branch, fx.Node):
        return False
    if allocation_of(gm, branch) in (None, root):  # the branch may be the stream's memory
        return False
    sharing, todo = {root}, [root]
    while todo:  # the nodes sharing root's memory, other than `node` and what follows from it
        for user in todo.pop().users:
            if user is not node and user not in sharing and memory_of(gm, user) in sharing:
                sharing.add(user)
                todo.append(user)
    for n in sharing:
        for user in n.users:
            if user is node or (user in sharing and position[user] < position[node]):
                continue
            if position[user] > position[node] or memory_of(gm, user) != NEW:
                return False
    return True


def allow_overwrites(gm: fx.GraphModule) -> None:
    """Set `overwrite` on every IndexAdd of `gm` whose stream nothing reads after it (in graph
    order, so that an earlier sum's permission is known to a later one)."""
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        if isinstance(m, IndexAdd) and not m.inplace and overwrite_is_safe(gm, node, position):
            m.overwrite = True
