"""SOSP's structure gates, and the operations of a pass that differentiates with respect to
them alone.

A gate is a multiplicative factor, at 1, on every output channel of a module that holds a
slice of some theta_s (`StructureGraph.theta`, at its rule's `gate_site`). Each gated channel
is homogeneous of degree one in its module's slice, so the derivative with respect to a gate,
summed over a structure's gates, is the directional derivative along theta_s, and the gates'
second derivatives so summed are theta_s . H theta_t (`sosp.curvature`).

On a GPU the mask's time is mostly kernel launches, about one per operator call
(`sosp.op_count`), so the gates cost no operation forward and have hand-written derivatives
(`_Gate`, `_GateGrad`), and in a gated pass convs and eval-mode BatchNorm run with constant
parameters and one-operation backwards (`ConstantParameters`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from sosp.channel_rules import module_rule
from sosp.structures import StructureGraph


class _Gate(torch.autograd.Function):
    """y = x at gamma = 1, x the output of a module: a structure gate that costs no operation
    forward (a copy only where a consumer writes y in place, `copy`). Linear, y = gamma * x,
    where `nb` is None; quadratic, y = gamma^2 (x - b) + gamma b with `nb` = -b broadcast over
    x, for a BatchNorm's output x = a * z + b whose input z is the output of the writer the
    same gate scales (`paired_norms`): one gate instead of one on each. `gamma` is [C] (one per
    channel) or [B, C] (one per sample and channel); the channels of `x` lie along `dim`. Its
    backward is `_GateGrad` where a graph is created (double backpropagation stays a few
    operations per gate), two operations elsewhere."""

    @staticmethod
    def forward(ctx, x, gamma, nb, dim: int, copy: bool) -> torch.Tensor:
        u = x if nb is None else torch.add(nb, x, alpha=2)  # dy/dgamma at 1: x, or 2x - b
        ctx.save_for_backward(x, u, gamma, nb)
        ctx.dim, ctx.per_sample = dim % x.dim(), gamma.dim() == 2
        return x.clone() if copy else x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, u, gamma, nb = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of this backward is asked for
            grad_x, grad_gamma = _GateGrad.apply(grad, x, u, gamma, nb, ctx.dim)
        else:
            grad_x, grad_gamma = grad, _summed_to_gate(grad * u, ctx.dim, ctx.per_sample)
        return grad_x, grad_gamma, None, None, None


class _GateGrad(torch.autograd.Function):
    """(grad * gamma^k, grad * dy/dgamma summed to gamma's shape) at gamma = 1, k = 1
    (linear gate) or 2 (quadratic), with the exact derivatives of both (once differentiable:
    what a Hessian-vector product needs)."""

    @staticmethod
    def forward(ctx, grad, x, u, gamma, nb, dim):
        ctx.save_for_backward(grad, x, u, nb)
        ctx.dim, ctx.per_sample = dim, gamma.dim() == 2
        ctx.set_materialize_grads(False)
        return grad.view_as(grad), _summed_to_gate(grad * u, dim, ctx.per_sample)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_grad_x, d_grad_gamma):
        grad, x, u, nb = ctx.saved_tensors
        k = 1 if nb is None else 2
        d_grad, d_x, e = d_grad_x, None, None  # e: what d_gamma sums
        if d_grad_gamma is not None:
            w = d_grad_gamma.view(_broadcast_shape(d_grad_gamma, x.dim(), ctx.dim))
            d_grad = u * w if d_grad is None else torch.addcmul(d_grad, u, w)
            d_x = grad * (w if k == 1 else 2 * w)  # d(dy/dgamma)/dx = k
            if k == 2:  # d^2 y / dgamma^2 = 2 (x - b)
                e = d_x * torch.add(x, nb)
        if d_grad_x is not None:  # d(grad * gamma^k)/dgamma = k grad
            if e is None:
                e = d_grad_x * grad if k == 1 else torch.mul(d_grad_x, 2) * grad
            else:
                e = torch.addcmul(e, d_grad_x, grad, value=k)
        d_gamma = None if e is None else _summed_to_gate(e, ctx.dim, ctx.per_sample)
        return d_grad, d_x, None, d_gamma, None, None


def _summed_to_gate(t: torch.Tensor, dim: int, per_sample: bool) -> torch.Tensor:
    """`t` summed over every dimension but the channels' (`dim`) and, for a gate per sample,
    the batch's: [C] or [B, C]."""
    dims = [d for d in range(t.dim()) if d != dim and (d != 0 or not per_sample)]
    return t.sum(dims) if dims else t


def _broadcast_shape(gate: torch.Tensor, x_dims: int, dim: int) -> list[int]:
    """The shape that broadcasts a gate-shaped tensor ([C] or [B, C]) over an x of `x_dims`
    dimensions with channels along `dim`."""
    shape = [1] * x_dims
    shape[dim] = gate.shape[-1]
    if gate.dim() == 2:
        shape[0] = gate.shape[0]
    return shape


@dataclass
class Gates:
    """SOSP's structure gates on every module of `graph.theta`, all ones (`gated`): `pieces`,
    per module [C] (a gate per channel) or [B, C] (per sample and channel), are the views of
    one leaf tensor [T] or [B, T], T the channels of all gated modules in `graph.theta` order.
    Gradients are taken with respect to the pieces."""

    pieces: tuple[torch.Tensor, ...]
    channels: torch.Tensor  # [K] positions in T of channels that belong to a structure
    structures: torch.Tensor  # [K] the structure of each

    def grads(self, outputs, grad_outputs=None, **kwargs) -> tuple[torch.Tensor, ...]:
        """d(outputs)/d(gate) for every gate, shaped as `pieces`."""
        return torch.autograd.grad(outputs, self.pieces, grad_outputs, **kwargs)

    def per_structure(self, grads: Iterable[torch.Tensor], num_structures: int) -> torch.Tensor:
        """[..., S]: per-gate gradients (shaped as `pieces`), summed over each structure's
        gates (the directional derivative along theta_s)."""
        flat = torch.cat(list(grads), -1)
        out = flat.new_zeros(*flat.shape[:-1], num_structures)
        return out.index_add_(-1, self.structures, flat.index_select(-1, self.channels))

    def on_structures(self) -> tuple[torch.Tensor, ...]:
        """Per gate ([C]): 1 on the channels of a structure, 0 elsewhere (theta_struc as
        gates)."""
        width = sum(p.shape[-1] for p in self.pieces)
        v = self.pieces[0].new_zeros(width).index_fill_(0, self.channels, 1)
        return v.split([p.shape[-1] for p in self.pieces])


@contextmanager
def gated(graph: StructureGraph, batch_size: int | None = None) -> Iterator[Gates]:
    """Install a gate (ones, requires_grad) on the output channels of every module of
    `graph.theta` (at its rule's `gate_site`): one per channel, or with `batch_size` one per
    sample and channel; a writer and the BatchNorm it alone feeds share one quadratic gate
    (`paired_norms`). Yields their `Gates`. The BatchNorms must be in eval mode."""
    p = next(graph.gm.parameters())
    pairs = paired_norms(graph)
    theta = [sl for sl in graph.theta if sl.module not in pairs.values()]
    modules = [graph.gm.get_submodule(sl.module) for sl in theta]
    widths = [m.weight.shape[0] for m in modules]
    shape = (sum(widths),) if batch_size is None else (batch_size, sum(widths))
    flat = torch.ones(shape, dtype=p.dtype, device=p.device, requires_grad=True)
    pieces = flat.split(widths, dim=-1)
    channels, structures, offset = [], [], 0
    handles, written = [], _written_in_place(graph)
    norms = [m for sl, m in zip(theta, modules, strict=True) if sl.module in pairs]
    shifts = dict(zip(map(id, norms), _negated_shifts(norms), strict=True))
    holders = {layer.theta_module: layer.name for layer in graph.layers.values()}
    for sl, m, gate in zip(theta, modules, pieces, strict=True):
        channels += [offset + c for c in sl.channels]
        structures += sl.structures
        offset += gate.shape[-1]
        name = holders.get(sl.module, sl.module)  # a writer whose theta_s lies in a part
        owner = graph.gm.get_submodule(name)
        rule = module_rule(owner)
        site, where = rule.gate_site(owner)
        nb = shifts.get(id(m))
        # a gate inside a fused module (norm, then activation) meets activations that may
        # write in place unseen by the fx graph: copied there
        copy = where == "input" or name in written
        handles.append(_install(site, where, gate, nb, rule.channel_dim, copy))
    try:
        yield Gates(pieces, _index(channels, p.device), _index(structures, p.device))
    finally:
        for h in handles:
            h.remove()


def paired_norms(graph: StructureGraph) -> dict[str, str]:
    """{BatchNorm: writer} where a writer's output feeds only an eval-mode BatchNorm (running
    statistics, gated at its output) and both hold theta slices of the same structures on the
    same channels. Scaling theta_s scales the writer's channel and the norm's weight and bias
    by 1 + t, so the norm's output channel is (1 + t)^2 (y - b) + (1 + t) b, b its shift: one
    quadratic gate there stands for both."""
    slices = {sl.module: sl for sl in graph.theta}
    nodes = {n.target: n for n in graph.gm.graph.nodes if n.op == "call_module"}
    pairs = {}
    for name, sl in slices.items():
        m = graph.gm.get_submodule(name)
        node = nodes.get(name)
        if node is None or not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        writer = slices.get(source.target)
        eval_stats = not m.training and m.running_var is not None
        at_output = module_rule(m).gate_site(m) == (m, "output")
        writer_m = graph.gm.get_submodule(source.target)
        writer_at_output = module_rule(writer_m).gate_site(writer_m) == (writer_m, "output")
        if (
            writer is not None
            and eval_stats
            and at_output
            and writer_at_output
            and (writer.channels, writer.structures) == (sl.channels, sl.structures)
        ):
            pairs[name] = source.target
    return pairs


def _negated_shifts(norms: list[nn.modules.batchnorm._BatchNorm]) -> tuple[torch.Tensor, ...]:
    """Per eval-mode BatchNorm, [C]: -b of its y = a z + b; a few operations for all of them
    (`gated` runs once per batch for SOSP-I)."""
    if not norms:
        return ()
    with torch.no_grad():
        like = norms[0].running_var

        def cat(tensors: list[torch.Tensor | None], fill: float) -> torch.Tensor:
            return torch.cat(
                [torch.full_like(m.running_var, fill) if t is None else t
                 for m, t in zip(norms, tensors, strict=True)]
            )  # fmt: skip

        eps = torch.tensor(
            [m.eps for m in norms for _ in range(len(m.running_var))], dtype=like.dtype
        ).to(like.device)
        scale = torch.rsqrt(cat([m.running_var for m in norms], 0) + eps)
        scale = scale * cat([m.weight for m in norms], 1)
        mean, bias = cat([m.running_mean for m in norms], 0), cat([m.bias for m in norms], 0)
        nb = torch.addcmul(-bias, mean, scale)  # -b = mean * scale - bias
        return nb.split([len(m.running_var) for m in norms])


def _install(site: nn.Module, where: str, gate: torch.Tensor, nb, dim: int, copy: bool):
    """A hook that gates `site`'s input or output; `nb` ([C] or None) as `_Gate` takes it,
    shaped once per number of dimensions."""
    shaped = {}

    def apply(x: torch.Tensor) -> torch.Tensor:
        if nb is not None and x.dim() not in shaped:
            shaped[x.dim()] = nb.view(_broadcast_shape(nb, x.dim(), dim % x.dim()))
        return _Gate.apply(x, gate, shaped.get(x.dim()), dim, copy)

    if where == "input":
        return site.register_forward_pre_hook(lambda _m, args: (apply(args[0]), *args[1:]))
    return site.register_forward_hook(  # of a tuple (an attention's and its weights) the first
        lambda _m, _i, out: (apply(out[0]), *out[1:]) if isinstance(out, tuple) else apply(out)
    )


def _written_in_place(graph: StructureGraph) -> set[str]:
    """The modules whose output a consumer in the fx graph may write in place, directly or
    through what may return it or a view of it (an Identity, eval-mode dropout, a reshape): a
    module with `inplace=True` (ReLU), a function called with `inplace=True`, or an in-place
    function or method (`relu_`, `add_`, `+=`)."""
    return {
        node.target
        for node in graph.gm.graph.nodes
        if node.op == "call_module" and _any_user_in_place(graph.gm, node)
    }


def _any_user_in_place(gm: nn.Module, node: fx.Node) -> bool:
    for user in node.users:
        if _in_place(gm, user):
            return True
        if _may_alias(gm, user) and _any_user_in_place(gm, user):
            return True
    return False


_IN_PLACE_OPERATORS = {"iadd", "isub", "imul", "itruediv", "ifloordiv", "ipow", "imod"}
_ALIASING = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose",
    "t", "contiguous", "squeeze", "unsqueeze", "expand", "expand_as", "narrow", "chunk",
    "split", "getitem", "select", "movedim", "identity", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "alpha_dropout", "feature_alpha_dropout", "drop_path",
}  # fmt: skip


def _target_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


def _in_place(gm: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    name = _target_name(node)
    if name.endswith("_") and not name.endswith("__") or name in _IN_PLACE_OPERATORS:
        return True
    if node.kwargs.get("inplace"):
        return True
    try:  # inplace passed by position, F.relu(x, True)
        bound = inspect.signature(node.target).bind_partial(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    return bool(bound.arguments.get("inplace", False))


def _may_alias(gm: nn.Module, node: fx.Node) -> bool:
    """Whether `node` may return its input or a view of it: a module without parameters
    (Identity, Dropout, DropPath return the input in eval mode), a view or dropout."""
    if node.op == "call_module":
        return next(gm.get_submodule(node.target).parameters(), None) is None
    return node.op in ("call_function", "call_method") and _target_name(node) in _ALIASING


def _index(values: list[int] | tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


class ConstantParameters(TorchFunctionMode):
    """Computes 2-d convolutions and eval-mode `F.batch_norm` (running statistics) as
    operations whose parameters are constants, each with a one-operation backward that is
    itself differentiable in one operation: a conv's backward is the transposed conv (where
    autograd's double backward of a conv adds a second conv and three transposes), and
    BatchNorm is one per-channel affine x * (w / sqrt(var + eps)) + (b - mean * w /
    sqrt(var + eps)), folded once per module (where native batch norm's double backward
    takes about twenty operations). The same values; no gradient reaches the parameters, so
    only for passes that differentiate with respect to gates."""

    def __init__(self) -> None:
        super().__init__()
        self._folded: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            return _constant_conv(*args, **kwargs)
        if func is F.relu:
            return _Relu.apply(*args, *kwargs.values())
        if func is not F.batch_norm:
            return func(*args, **kwargs)
        bound = dict(zip(_BATCH_NORM_ARGS, args, strict=False)) | kwargs
        if bound.get("training", False) or bound.get("running_var") is None:
            return func(*args, **kwargs)
        x = bound["input"]
        key = (id(bound["running_var"]), x.dim())
        if key not in self._folded:
            self._folded[key] = _folded_affine(bound, x.dim())
        scale, shift = self._folded[key]
        return _ConstantAffine.apply(x, scale, shift)


def _constant_conv(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str) or x.dim() != 4:  # "same" may pad unevenly: autograd's conv
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    pair = torch.nn.modules.utils._pair
    conf = (pair(stride), pair(padding), pair(dilation), groups)
    return _ConstantConv.apply(x, weight, bias, conf)


class _ConstantConv(torch.autograd.Function):
    """F.conv2d with constant weight and bias: its backward is one transposed conv of the
    gradient, with the output padding that restores the input's size."""

    @staticmethod
    def forward(ctx, x, weight, bias, conf):
        stride, padding, dilation, groups = conf
        ctx.save_for_backward(weight)
        ctx.conf, ctx.size = conf, x.shape[2:]
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        extra = [
            size - ((g - 1) * s - 2 * p + d * (k - 1) + 1)
            for size, g, s, p, d, k in zip(
                ctx.size, grad.shape[2:], stride, padding, dilation, weight.shape[2:], strict=True
            )
        ]
        x_grad = F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)
        return x_grad, None, None, None


class _Relu(torch.autograd.Function):
    """F.relu (in place where asked): backward one threshold_backward, whose own backward is
    one more and nothing for the activation (autograd's formula forms zeros for it there and
    carries them back through the network)."""

    @staticmethod
    def forward(ctx, x, inplace=False):
        y = x.relu_() if inplace else x.relu()
        if inplace:
            ctx.mark_dirty(y)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return _ReluGrad.apply(grad, y), None


class _ReluGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, y):
        ctx.save_for_backward(y)
        return torch.ops.aten.threshold_backward(grad, y, 0)

    @staticmethod
    @once_differentiable
    def backward(ctx, d):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(d, y, 0), None


class _ConstantAffine(torch.autograd.Function):
    """x * scale + shift with constant `scale` and `shift`: one operation forward, one in its
    backward and one in its double backward (where `addcmul`'s take two)."""

    @staticmethod
    def forward(ctx, x, scale, shift):
        ctx.save_for_backward(scale)
        return torch.addcmul(shift, x, scale)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None


_BATCH_NORM_ARGS = (
    "input",
    "running_mean",
    "running_var",
    "weight",
    "bias",
    "training",
    "momentum",
    "eps",
)


def _folded_affine(bound: dict, x_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each [C, 1, ...] to broadcast over an input of `x_dims` dimensions."""
    with torch.no_grad():
        scale = torch.rsqrt(bound["running_var"] + bound.get("eps", 1e-5))
        if bound.get("weight") is not None:
            scale = scale * bound["weight"]
        shift = -bound["running_mean"] * scale
        if bound.get("bias") is not None:
            shift = shift + bound["bias"]
    shape = (-1,) + (1,) * (x_dims - 2)
    return scale.view(shape), shift.view(shape)
