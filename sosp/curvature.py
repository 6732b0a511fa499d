"""First- and second-order quantities per structure, streamed over N' samples in batches.

Notation (the SOSP paper, Sec. 2): S structures, D outputs, N' samples, loss
L = (1/N') sum_n l(f(x_n), y_n) with l = cross-entropy or 1/2 ||f - y||^2.

- `gate_jacobians`: per-sample J_n in R^{D x S} with J_n[:, s] = phi(x_n) theta_s, from
  multiplicative gates (= 1) on the output channels of every module that holds a slice of
  theta_s (`StructureGraph.theta`: the writer, its affine BN, consumer slices; in a fused
  norm-activation between norm and activation: its rule's `gate_site`). Each such gated
  channel is homogeneous of degree one in its module's slice, so the sum of the gate
  derivatives is the directional derivative along theta_s. One backward pass per output
  dimension gives J for the whole batch.
- `gauss_newton`: G = (1/N') sum_n J_n^T R_n J_n (R = diag(p) - p p^T for cross-entropy, I for
  squared loss) and lambda_1 = theta_s . dL/dtheta, or with `label_samples=k` the unbiased
  estimate of G from k labels per input sampled from p.
- `hessian_terms`: lambda_1 and theta_s . (H theta_struc) by exact double backpropagation
  through the same gates, one per channel: their Hessian times 1 on the structures' channels,
  summed per structure (each gate scales its slice linearly, so this is theta_s . H
  theta_struc).
- `flow_terms`: per parameter the gradient g of L (logits divided by a temperature T) and the
  Hessian-gradient product H g, over every trainable parameter (the gradient-flow measures
  of Lubana & Dick, `baselines/gradient_flow.py`).

Everything runs with the model in eval mode (BatchNorm on running statistics), so samples do
not interact; it works in float64 when model and data are float64.

The gates and the constant-parameter operations of the gated passes are `sosp.gates`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from sosp.attention import heads_attention
from sosp.channel_rules import AttentionRule, module_rule
from sosp.errors import BadInput
from sosp.gates import ConstantParameters, Gates, gated
from sosp.modes import eval_mode
from sosp.structures import StructureGraph

Batch = tuple[torch.Tensor, torch.Tensor]
LOSSES = ("cross_entropy", "squared")


def dense_targets(y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Targets [B, D] in the dtype of `out`: integer labels one-hot, anything else as given."""
    return F.one_hot(y, out.shape[1]).to(out.dtype) if y.dtype == torch.long else y


def loss_sum(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sum_n l(out_n, y_n) for a batch. Integer targets of the squared loss are one-hot."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y, reduction="sum")
    if loss == "squared":
        return 0.5 * ((out - dense_targets(y, out)) ** 2).sum()
    raise BadInput(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def output_residual(loss: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dl/df per sample [B, D]: p - onehot(y) for cross-entropy, f - y for squared loss."""
    return (out.softmax(1) if loss == "cross_entropy" else out) - dense_targets(y, out)


def first_samples(batches: Iterable[Batch], n_samples: int) -> Iterator[Batch]:
    """The batches holding the first `n_samples` samples of `batches`, the last one cut, each
    checked by `checked_batch`."""
    seen = 0
    for i, batch in enumerate(batches):
        if seen >= n_samples:
            return
        x, y = checked_batch(batch, i)
        x, y = x[: n_samples - seen], y[: n_samples - seen]
        seen += len(x)
        yield x, y


BATCH_HINT = "each batch must be a pair (inputs [B, ...], labels [B]) of tensors"


def checked_batch(batch: object, i: int) -> Batch:
    """Batch number `i` of the pruning data as (inputs, labels), integer labels as int64;
    `BadInput` saying how to adapt anything else (a dict, one sample, unequal lengths)."""
    if isinstance(batch, dict):
        keys = list(batch)
        pair = ", ".join(f"b[{k!r}]" for k in keys) if len(keys) == 2 else "b[INPUTS], b[LABELS]"
        raise BadInput(
            f"batch {i} is a dict (keys {', '.join(map(repr, keys))}); {BATCH_HINT}: pass "
            f"data=(({pair}) for b in loader)"
        )
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        what = f"a {len(batch)}-tuple" if isinstance(batch, tuple | list) else type(batch).__name__
        raise BadInput(
            f"batch {i} is {what}; {BATCH_HINT}: pass data=an iterable of them, e.g. a "
            "DataLoader over a dataset of (input, label) samples, or [(x, y)]"
        )
    x, y = batch
    if isinstance(y, int | float) or (isinstance(y, torch.Tensor) and y.dim() == 0):
        raise BadInput(
            f"batch {i} holds a {_described(x)} and the label {_described(y)}: one sample, not "
            f"a batch; {BATCH_HINT}: batch the samples, e.g. "
            "data=torch.utils.data.DataLoader(dataset, batch_size=100)"
        )
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise BadInput(
            f"batch {i} holds a {_described(x)} and a {_described(y)}; {BATCH_HINT}: convert "
            "them with torch.as_tensor"
        )
    if len(x) != len(y):
        raise BadInput(f"batch {i} has {len(x)} inputs but {len(y)} labels; {BATCH_HINT}")
    if x.is_meta or y.is_meta:
        raise BadInput(f"batch {i} is on the meta device and holds no values; pass real data")
    if not y.is_floating_point() and y.dtype != torch.long:
        y = y.long()  # int32, uint8 class indices: what the losses and one_hot take
    if x.is_inference() or y.is_inference():  # made under torch.inference_mode: autograd
        x, y = x.clone(), y.clone()  # cannot save them, a copy outside the mode it can
    return x, y


def _described(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    return repr(value) if isinstance(value, int | float) else type(value).__name__


def check_targets(batches: Iterable[Batch], classes: int) -> None:
    """Raise `BadInput` unless every batch's labels fit a network of `classes` outputs: class
    indices [B] in 0 .. classes-1, or float targets [B, classes] (one-hot, probabilities)."""
    fix = (
        f"pass class indices 0..{classes - 1} of shape [B] or float targets of shape [B, {classes}]"
    )
    for i, (_, y) in enumerate(batches):
        if y.is_floating_point():
            if tuple(y.shape[1:]) != (classes,):
                raise BadInput(
                    f"batch {i} has float labels of shape {tuple(y.shape)} for a model of "
                    f"{classes} outputs; {fix} (class indices as floats: y.long())"
                )
        elif y.dim() != 1:
            raise BadInput(f"batch {i} has labels of shape {tuple(y.shape)}; {fix}")
        elif len(y) and not 0 <= int(y.min()) <= int(y.max()) < classes:
            lo, hi = int(y.min()), int(y.max())
            raise BadInput(
                f"batch {i} has label {lo if lo < 0 else hi}, outside the model's {classes} "
                f"classes 0..{classes - 1}; create the model with as many classes as the data has "
                "(num_classes=...), or map the labels into that range"
            )


def check_differentiable(graph: StructureGraph) -> None:
    """Raise `BadInput` naming the parameters that hold a structure's theta_s and have
    requires_grad=False, for methods that differentiate the loss with respect to them.
    Frozen parameters elsewhere (excluded layers, the classifier) are constants and fine."""
    frozen, layers = [], set()
    for sl in graph.theta:
        m = graph.gm.get_submodule(sl.module)
        for attr in ("weight", "bias"):
            p = getattr(m, attr, None)
            if p is not None and not p.requires_grad:
                frozen.append(f"{sl.module}.{attr}")
                layers.update(graph.structures[s][0] for s in sl.structures)
    if not frozen:
        return
    need = "this method needs the loss's gradient with respect to the pruned layers' parameters"
    if not any(p.requires_grad for p in graph.gm.parameters()):
        raise BadInput(
            f"every parameter of the model has requires_grad=False (a frozen model), but {need}"
            "; call model.requires_grad_(True) before pruning (sosp_i, sosp_h, magnitude, slimming "
            "and random need no gradients)"
        )
    raise BadInput(
        f"{len(frozen)} parameters of pruned layers have requires_grad=False "
        f"({_listed(frozen)}), but {need}; make them trainable (model.requires_grad_(True)) "
        f"or leave those layers unpruned (exclude={_listed(sorted(layers), quoted=True)}); "
        "frozen layers that are excluded are fine"
    )


def _listed(names: list[str], quoted: bool = False, most: int = 4) -> str:
    shown = [repr(n) if quoted else n for n in names[:most]]
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return ("[" if quoted else "") + ", ".join(shown) + more + ("]" if quoted else "")


def take_samples(
    batches: Iterable[Batch], n_samples: int, device: torch.device, dtype: torch.dtype
) -> Iterator[Batch]:
    """`first_samples`, inputs moved to the model's device and dtype, labels to its device."""
    for x, y in first_samples(batches, n_samples):
        yield x.to(device, dtype), y.to(device)


@dataclass
class GaussNewton:
    """SOSP-I's quantities over N' samples."""

    n_samples: int
    lambda1: torch.Tensor  # [S] theta_s . dL/dtheta
    G: torch.Tensor  # [S, S] (1/N') sum_n J_n^T R_n J_n


@dataclass
class HessianTerms:
    """SOSP-H's quantities over N' samples."""

    n_samples: int
    lambda1: torch.Tensor  # [S] theta_s . dL/dtheta
    h_theta: torch.Tensor  # [S] theta_s . (H theta_struc)


def _gate_grads(
    scalar_or_out: torch.Tensor, gates: Gates, num_structures: int, grad_outputs=None
) -> torch.Tensor:
    """[B, S]: per sample and structure, the sum of d(.)/d(gate) over the structure's gates."""
    grads = gates.grads(scalar_or_out, grad_outputs, retain_graph=True)
    return gates.per_structure(grads, num_structures)


def gate_jacobians(graph: StructureGraph, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(J [B, D, S], f(x) [B, D]) with J[n, :, s] = phi(x_n) theta_s, by D backward passes.
    The model must be in eval mode."""
    with gated(graph, len(x)) as gates:
        out = graph.gm(x)
        S = len(graph.structures)
        cols = [_gate_grads(out[:, d].sum(), gates, S) for d in range(out.shape[1])]
    return torch.stack(cols, 1), out.detach()


def gauss_newton(
    graph: StructureGraph,
    batches: Iterable[Batch],
    loss: str,
    n_samples: int = 1000,
    label_samples: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> GaussNewton:
    """G [S, S] and lambda_1 [S] over the first `n_samples` samples (see module docstring).

    Exact: D backward passes per batch. With `label_samples=k`: k + 1 backward passes per
    batch and G the unbiased estimate E_{y~p}[(J^T (p - e_y))(J^T (p - e_y))^T].
    """
    p = next(graph.gm.parameters())
    S = len(graph.structures)
    G = torch.zeros(S, S, dtype=p.dtype, device=p.device)
    lambda1 = torch.zeros(S, dtype=p.dtype, device=p.device)
    n = 0
    with (
        eval_mode(graph.gm),
        _gated_forms(graph, twice=False),
        tqdm(total=n_samples, desc="gauss-newton", disable=not progress, unit="sample") as bar,
    ):
        for x, y in take_samples(batches, n_samples, p.device, p.dtype):
            if label_samples:
                Gb, l1 = _sampled_batch(graph, x, y, loss, label_samples, generator)
            else:
                Gb, l1 = _exact_batch(graph, x, y, loss)
            G += Gb
            lambda1 += l1
            n += len(x)
            bar.update(len(x))
    _check_count(n, n_samples)
    return GaussNewton(n, lambda1 / n, G / n)


def _exact_batch(graph, x, y, loss) -> tuple[torch.Tensor, torch.Tensor]:
    J, out = gate_jacobians(graph, x)  # [B, D, S]
    lambda1 = torch.einsum("nds,nd->s", J, output_residual(loss, out, y))
    if loss == "squared":
        A = J.reshape(-1, J.shape[2])
        return A.T @ A, lambda1
    prob = out.softmax(1)
    A = (J * prob.sqrt()[:, :, None]).reshape(-1, J.shape[2])  # J^T diag(p) J = A^T A
    V = torch.einsum("nds,nd->ns", J, prob)  # J^T p
    return A.T @ A - V.T @ V, lambda1


def _sampled_batch(graph, x, y, loss, k, generator) -> tuple[torch.Tensor, torch.Tensor]:
    if loss != "cross_entropy":
        raise BadInput(
            "label sampling estimates cross-entropy curvature; use loss="
            "'cross_entropy' or drop label_samples"
        )
    with gated(graph, len(x)) as gates:
        out = graph.gm(x)
        prob = out.detach().softmax(1)
        S = len(graph.structures)
        lambda1 = _gate_grads(out, gates, S, output_residual(loss, out.detach(), y)).sum(0)
        G = torch.zeros(lambda1.numel(), lambda1.numel(), dtype=out.dtype, device=out.device)
        for _ in range(k):
            sampled = torch.multinomial(prob.cpu().double(), 1, generator=generator).flatten()
            r = output_residual(loss, out.detach(), sampled.to(out.device))
            V = _gate_grads(out, gates, S, r)  # [B, S]
            G += V.T @ V
    return G / k, lambda1


def hessian_terms(
    graph: StructureGraph,
    batches: Iterable[Batch],
    loss: str,
    n_samples: int = 1000,
    hessian: bool = True,
    progress: bool = False,
) -> HessianTerms:
    """lambda_1 [S] and theta_s . (H theta_struc) [S] (zeros when `hessian=False`), with H the
    exact Hessian of L, theta_struc the weights of all structures.

    Both through the gates of `gated` (one per channel): the gate gradient summed over a
    structure's gates is theta_s . dL/dtheta, and since each gate scales its module's slice
    linearly, the gates' Hessian times v (1 on every structure's channels) summed the same
    way is theta_s . (H theta_struc); one double backpropagation per batch."""
    p0 = next(graph.gm.parameters())
    S = len(graph.structures)
    n = 0
    with (
        eval_mode(graph.gm),
        gated(graph) as gates,
        _gated_forms(graph, twice=hessian),
        tqdm(total=n_samples, desc="hessian", disable=not progress, unit="sample") as bar,
    ):
        lambda1 = h_theta = v = None  # per gate, summed over the batches
        for x, y in take_samples(batches, n_samples, p0.device, p0.dtype):
            total = loss_sum(loss, graph.gm(x), y)
            grads = gates.grads(total, create_graph=hessian)
            if hessian:
                v = gates.on_structures() if v is None else v
                h_theta = _accumulated(h_theta, gates.grads(grads, v))
            lambda1 = _accumulated(lambda1, grads)
            n += len(x)
            bar.update(len(x))
    _check_count(n, n_samples)

    def per_structure(per_gate: list[torch.Tensor]) -> torch.Tensor:
        return gates.per_structure(per_gate, S) / n

    lambda1 = per_structure(lambda1)
    return HessianTerms(
        n, lambda1, per_structure(h_theta) if hessian else torch.zeros_like(lambda1)
    )


def _accumulated(
    total: list[torch.Tensor] | None, grads: tuple[torch.Tensor, ...]
) -> list[torch.Tensor]:
    """`total` + `grads` tensor by tensor, in place and outside autograd (a copy of `grads`
    when `total` is None)."""
    with torch.no_grad():
        if total is None:
            return torch._foreach_mul(grads, 1.0)
        torch._foreach_add_(total, grads)
        return total


@dataclass
class FlowTerms:
    """The gradient-flow measures' quantities over N' samples, per parameter name: g = dL/dtheta
    and H g, with L the mean loss of the logits divided by `temperature`. Entries a mask holds
    at zero (`frozen`) are zero in both: these are the gradient and Hessian-gradient product
    of the network without them."""

    n_samples: int
    temperature: float
    grad: dict[str, torch.Tensor]
    hessian_grad: dict[str, torch.Tensor] | None  # None when not asked for


def flow_terms(
    model: nn.Module,
    batches: Iterable[Batch],
    loss: str,
    n_samples: int = 1000,
    temperature: float = 1.0,
    hessian: bool = True,
    frozen: dict[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> FlowTerms:
    """g [per parameter] over the first `n_samples` samples, and with `hessian` H g by double
    backpropagation (a second pass, g held fixed), every trainable parameter of `model` in
    eval mode. `frozen`: {parameter name: bool mask} of entries held at zero (a soft mask's
    pruned weights); g is restricted to the others before H g is formed."""
    if temperature <= 0:
        raise BadInput(f"temperature must be positive, not {temperature}")
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    names, params = [k for k, _ in named], [p for _, p in named]
    keep = [None if frozen is None or k not in frozen else ~frozen[k] for k in names]
    p0 = params[0]

    def passes(desc: str):
        with tqdm(total=n_samples, desc=desc, disable=not progress, unit="sample") as bar:
            for x, y in take_samples(batches, n_samples, p0.device, p0.dtype):
                yield x, y, loss_sum(loss, model(x) / temperature, y)
                bar.update(len(x))

    grad = [torch.zeros_like(p) for p in params]
    n = 0
    with eval_mode(model), TwiceDifferentiable() if hessian else nullcontext():
        for x, _, total in passes("gradient"):
            for acc, g in zip(grad, torch.autograd.grad(total, params), strict=True):
                acc += g
            n += len(x)
        _check_count(n, n_samples)
        grad = [_kept(g / n, k) for g, k in zip(grad, keep, strict=True)]
        hg = None
        if hessian:
            hg = [torch.zeros_like(p) for p in params]
            for _, _, total in passes("hessian-gradient"):
                grads = torch.autograd.grad(total, params, create_graph=True)
                dot = sum((g * v).sum() for g, v in zip(grads, grad, strict=True))
                for acc, h in zip(hg, torch.autograd.grad(dot, params), strict=True):
                    acc += h
            hg = [_kept(h / n, k) for h, k in zip(hg, keep, strict=True)]
            hg = dict(zip(names, hg, strict=True))
    return FlowTerms(n, temperature, dict(zip(names, grad, strict=True)), hg)


def _kept(t: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return t.detach() if keep is None else t.detach() * keep


class TwiceDifferentiable(TorchFunctionMode):
    """Computes ops that PyTorch cannot differentiate twice by equal ones that it can:
    hardsigmoid(x) = relu6(x + 3) / 6 (MobileNetV3's squeeze-and-excitation gates), and fused
    scaled-dot-product attention (no mask, not causal, no dropout) as softmax(q k^T * scale) v
    (a vision transformer's attention, also inside `nn.MultiheadAttention`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return F.relu6(args[0] + 3) / 6
        if func is F.scaled_dot_product_attention:
            return _attention(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return _multi_head_attention(*args, **kwargs)
        return func(*args, **kwargs)


def _attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    """softmax(q k^T * scale) v: `F.scaled_dot_product_attention`'s math, twice
    differentiable; anything it does beyond that is left to it."""
    if attn_mask is not None or dropout_p or is_causal or kwargs.get("enable_gqa"):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask, dropout_p, is_causal, scale=scale, **kwargs
        )
    return _attention_weights(q, k, scale) @ v


def _attention_weights(q, k, scale=None):
    """softmax(q k^T * scale), scale 1 / sqrt(q's last dim) by default."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return ((q * scale) @ k.transpose(-2, -1)).softmax(-1)


def _multi_head_attention(
    query, key, value, embed_dim, num_heads, in_w, in_b, bias_k, bias_v, add_zero_attn,
    dropout_p, out_w, out_b, training=True, key_padding_mask=None, need_weights=True,
    attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
    v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
    is_causal=False,
):  # fmt: skip
    """`F.multi_head_attention_forward` (query, key, value [L, B, E]) with its attention in
    the explicit form of `_attention`; anything else it does (masks, extra or separate
    projections, dropout) is left to it."""
    plain = not (
        bias_k is not None or bias_v is not None or add_zero_attn or key_padding_mask is not None
        or attn_mask is not None or use_separate_proj_weight or static_k is not None
        or static_v is not None or is_causal or (dropout_p and training)
    )  # fmt: skip
    if not plain:
        return F.multi_head_attention_forward(
            query, key, value, embed_dim, num_heads, in_w, in_b, bias_k, bias_v,
            add_zero_attn, dropout_p, out_w, out_b, training, key_padding_mask, need_weights,
            attn_mask, use_separate_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight,
            static_k, static_v, average_attn_weights, is_causal,
        )  # fmt: skip
    L, B, _ = query.shape
    w, b = in_w.chunk(3), in_b.chunk(3) if in_b is not None else (None,) * 3
    q, k, v = (
        F.linear(t, wi, bi).reshape(t.shape[0], B * num_heads, -1).transpose(0, 1)
        for t, wi, bi in zip((query, key, value), w, b, strict=True)
    )  # [B * H, L or S, D]
    weights = _attention_weights(q, k)
    out = (weights @ v).transpose(0, 1).reshape(L, B, embed_dim)
    out = F.linear(out, out_w, out_b)
    if not need_weights:
        return out, None
    weights = weights.view(B, num_heads, L, -1)
    return out, weights.mean(1) if average_attn_weights else weights


def _needs_twice_differentiable(graph: StructureGraph) -> bool:
    """Whether `graph.gm` runs an op that `TwiceDifferentiable` replaces: hardsigmoid, or
    attention (a module of an attention rule, timm's or torch's; a heads_attention or
    scaled_dot_product_attention node)."""
    targets = {F.hardsigmoid, F.scaled_dot_product_attention, heads_attention}
    return any(
        isinstance(m, nn.Hardsigmoid) or isinstance(module_rule(m), AttentionRule)
        for m in graph.gm.modules()
    ) or any(n.target in targets for n in graph.gm.graph.nodes)


@contextmanager
def _gated_forms(graph: StructureGraph, twice: bool) -> Iterator[None]:
    """The torch-function modes of a gated pass: `ConstantParameters`, and where a second
    derivative is taken, `TwiceDifferentiable` if the network needs it."""
    with (
        ConstantParameters(),
        TwiceDifferentiable() if twice and _needs_twice_differentiable(graph) else nullcontext(),
    ):
        yield


def _check_count(n: int, wanted: int) -> None:
    if n == 0:
        raise BadInput("no samples: the data passed for pruning is empty")
    if n < wanted:
        import warnings

        warnings.warn(f"asked for N'={wanted} samples but the data had only {n}", stacklevel=3)
