"""The per-operation channel rules: one table, read by the analysis (`sosp.structures`) and by
the surgery and soft mask (`sosp.surgery`).

Every traced node is looked up here, a module node by its module's type (or nearest base class)
in `MODULE_RULES`, a function or method node by its target in `FUNCTION_RULES` or
`METHOD_RULES`. A rule states

- `role` (modules): what the op is to the analysis. A WRITER creates one new channel per output
  channel (Conv2d with groups=1, Linear). A NORM scales and shifts each channel with its own
  parameters; it belongs to the writer whose output only it reads (a private BatchNorm), else
  it is a consumer. A CONSUMER acts per channel with its own parameters on channels it does not
  write (a depthwise Conv2d). A MAP has no parameters.
- `sources`: the channel sources of the output from those of the input: per channel, the set
  of writer-channel ids feeding it. NORM and CONSUMER keep them; a MAP keeps channels apart and
  maps a zero channel to a zero channel (ReLU, pooling), or moves channels (flatten, a
  zero-padding shortcut), or merges them (a residual sum).
- `shrink` (modules): the module rebuilt for kept output and input channels, None where it
  needs no change; `zero` (modules): make output channels exactly zero in place (soft mask).
- `rewire` (functions, methods): what surgery changes in the graph around the node.
- `zero_preserving`: False for an op whose zero input is not zero (sigmoid, adding a
  constant). Its output and everything computed from it is *tainted*: a dead channel there is
  not zero. A tainted tensor may gate a clean one by a product (squeeze-and-excitation:
  `x * sigmoid(e)`): the gate's channels then *follow* the gated ones (`Walk.tie`): they are
  no structures of their own and go exactly when the gated channel goes. Any other read of a
  tainted channel that can die fails.
- `links` (modules): writer ids that must be pruned together (the input and output channels
  of one group of a grouped convolution).
- `gate_site` (modules): where SOSP's structure gate on the module's output channels sits.

A node with no rule, or whose arguments its rule cannot prove channel-safe, raises
`Unsupported` naming the node. Supporting a new operation means adding its rule (in `modules`,
`ops` or `views`, on the base classes of `base`) and its entry in the table below.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from sosp.attention import heads_attention
from sosp.channel_rules.base import (
    ELEMENTWISE_FUNCTIONS,
    ELEMENTWISE_METHODS,
    ELEMENTWISE_MODULES,
    Blocked,
    ChannelsLast,
    Kept,
    ModuleRule,
    OpRule,
    Role,
    Sources,
    TaintingModuleRule,
    Unsupported,
    Walk,
    is_zero_preserving_elementwise,
    slice_params,
    unsupported,
)
from sosp.channel_rules.modules import (
    AttentionRule,
    BatchNormRule,
    Conv2dRule,
    FlattenRule,
    GroupNormRule,
    LayerNormRule,
    LinearRule,
    MultiheadAttentionRule,
    ZeroPadShortcutRule,
)
from sosp.channel_rules.ops import (
    AddRule,
    CatRule,
    DivRule,
    DropoutRule,
    HeadsRule,
    MeanRule,
    MulRule,
    PadRule,
    SubRule,
    TaintingRule,
)
from sosp.channel_rules.views import (
    FlattenOpRule,
    GetItemRule,
    PermuteRule,
    SplitRule,
    TransposeRule,
    ViewRule,
    channel_pieces,
)
from sosp.shortcuts import ZeroPadShortcut

__all__ = [
    "Sources", "Kept", "Unsupported", "unsupported", "Role", "Walk", "slice_params",
    "ModuleRule", "OpRule", "TaintingModuleRule", "ChannelsLast", "Blocked", "channel_pieces",
    "is_zero_preserving_elementwise", "ELEMENTWISE_MODULES", "ELEMENTWISE_FUNCTIONS",
    "ELEMENTWISE_METHODS", "ZERO_PRESERVING_MODULES", "ZERO_PRESERVING_FUNCTIONS",
    "TAINTING_MODULES", "TAINTING_FUNCTIONS", "TAINTING_METHODS", "MODULE_RULES",
    "FUNCTION_RULES", "METHOD_RULES", "NAMED_MODULE_RULES", "qualified_name", "module_rule",
    "op_rule", "AttentionRule", "BatchNormRule", "Conv2dRule", "FlattenRule", "GroupNormRule",
    "LayerNormRule", "LinearRule", "MultiheadAttentionRule", "ZeroPadShortcutRule", "AddRule",
    "CatRule", "DivRule", "DropoutRule", "HeadsRule", "MeanRule", "MulRule", "PadRule",
    "SubRule", "TaintingRule",
    "FlattenOpRule", "GetItemRule", "PermuteRule", "SplitRule", "TransposeRule", "ViewRule",
]  # fmt: skip


# -- the table --------------------------------------------------------------------------------
# Ops that keep channels apart and map a zero channel to a zero channel.
ZERO_PRESERVING_MODULES = (
    *ELEMENTWISE_MODULES, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Upsample,
)  # fmt: skip
ZERO_PRESERVING_FUNCTIONS = (
    *ELEMENTWISE_FUNCTIONS, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate,
)  # fmt: skip
# Elementwise ops that map 0 to nonzero: their outputs are tainted (module docstring).
TAINTING_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
TAINTING_FUNCTIONS = (torch.sigmoid, F.hardsigmoid)
TAINTING_METHODS = ("sigmoid", "sigmoid_")

MODULE_RULES: dict[type[nn.Module], ModuleRule] = {
    nn.Conv2d: Conv2dRule(),
    nn.Linear: LinearRule(),
    nn.BatchNorm1d: BatchNormRule(),
    nn.BatchNorm2d: BatchNormRule(),
    nn.Flatten: FlattenRule(),
    nn.LayerNorm: LayerNormRule(channel_dim=-1),
    nn.GroupNorm: GroupNormRule(),
    nn.MultiheadAttention: MultiheadAttentionRule(),
    ZeroPadShortcut: ZeroPadShortcutRule(),
    **{t: ModuleRule() for t in ZERO_PRESERVING_MODULES},
    **{t: TaintingModuleRule() for t in TAINTING_MODULES},
}
FUNCTION_RULES: dict[Callable, OpRule] = {
    **{f: AddRule() for f in (operator.add, operator.iadd, torch.add)},
    **{f: MulRule() for f in (operator.mul, operator.imul, torch.mul)},
    **{f: DivRule() for f in (operator.truediv, torch.div)},
    **{f: SubRule() for f in (operator.sub, torch.sub)},
    torch.cat: CatRule(),
    torch.flatten: FlattenOpRule(),
    **{f: SplitRule() for f in (torch.split, torch.chunk)},
    torch.reshape: ViewRule(),
    torch.permute: PermuteRule(),
    torch.transpose: TransposeRule(),
    operator.getitem: GetItemRule(),
    **{f: OpRule() for f in ZERO_PRESERVING_FUNCTIONS},
    F.dropout: DropoutRule(),
    F.pad: PadRule(),
    heads_attention: HeadsRule(),
    **{f: TaintingRule() for f in TAINTING_FUNCTIONS},
}
METHOD_RULES: dict[str, OpRule] = {
    **{name: AddRule() for name in ("add", "add_")},
    **{name: MulRule() for name in ("mul", "mul_")},
    **{name: DivRule() for name in ("div", "div_")},
    "sub": SubRule(),
    "flatten": FlattenOpRule(),
    "mean": MeanRule(),
    **{name: SplitRule() for name in ("split", "chunk")},
    **{name: ViewRule() for name in ("view", "reshape")},
    "transpose": TransposeRule(),
    "permute": PermuteRule(),
    **{name: OpRule() for name in ELEMENTWISE_METHODS},
    **{name: TaintingRule() for name in TAINTING_METHODS},
}


# Library modules that keep channels apart and map zero to zero, by qualified class name (so
# that this table imports neither library): per-sample drop paths, identities in eval mode.
NAMED_MODULE_RULES: dict[str, ModuleRule] = {
    "timm.layers.attention.Attention": AttentionRule(),
    # TensorFlow's "same" padding (every tf_* model): the padding depends on the input's size
    # alone, which pruning keeps, so the conv's channels are a Conv2d's
    "timm.layers.conv2d_same.Conv2dSame": Conv2dRule(),
    "torchvision.ops.stochastic_depth.StochasticDepth": ModuleRule(),
    "timm.layers.drop.DropPath": ModuleRule(),
    "timm.layers.drop.DropBlock2d": ModuleRule(),
    "timm.layers.norm.LayerNorm2d": LayerNormRule(channel_dim=1),
    "torchvision.models.convnext.LayerNorm2d": LayerNormRule(channel_dim=1),
}


def qualified_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def module_rule(m: nn.Module) -> ModuleRule | None:
    """The rule of `m`'s type, or of its nearest base class that has one."""
    for t in type(m).__mro__:
        rule = MODULE_RULES.get(t) or NAMED_MODULE_RULES.get(qualified_name(t))
        if rule is not None:
            return rule
    return None


def op_rule(node: fx.Node) -> OpRule | None:
    """The rule of a call_function or call_method node's target."""
    table = METHOD_RULES if node.op == "call_method" else FUNCTION_RULES
    return table.get(node.target)
