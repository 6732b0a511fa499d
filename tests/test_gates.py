"""SOSP's gates and the constant-parameter operations of the gated passes (`sosp.gates`):
each equals what autograd computes from the plain operations, values and first and second
derivatives, in float64."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from sosp import curvature, gates
from sosp.gates import ConstantParameters
from sosp.op_count import OpCounter
from sosp.structures import analyze

CONVS = [  # (input [B, C, H, W], out channels, kernel, stride, padding, dilation, groups)
    ((2, 4, 7, 7), 6, 3, 2, 1, 1, 1),
    ((2, 4, 8, 8), 6, 3, 2, 1, 1, 1),
    ((2, 4, 8, 9), 4, (3, 1), (2, 1), (1, 0), 1, 2),
    ((2, 4, 9, 9), 4, 3, 1, 2, 2, 4),
    ((1, 3, 6, 6), 5, 1, 2, 0, 1, 1),
]


@pytest.mark.parametrize("shape, out, k, stride, padding, dilation, groups", CONVS)
def test_constant_conv_matches_autograd_to_second_order(
    shape, out, k, stride, padding, dilation, groups
):
    """Under `ConstantParameters` F.conv2d gives the same output, input gradient (its
    transposed conv restores odd and even input sizes) and gradient of a function of that
    gradient as autograd's conv, for strides, paddings, dilations and groups."""
    g = torch.Generator().manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    w = torch.randn(out, shape[1] // groups, kh, kw, generator=g, dtype=torch.float64)
    b = torch.randn(out, generator=g, dtype=torch.float64)
    x0 = torch.randn(*shape, generator=g, dtype=torch.float64)

    def second_order(constant: bool):
        x = x0.clone().requires_grad_()
        with ConstantParameters() if constant else contextlib.nullcontext():
            y = F.conv2d(x, w, b, stride, padding, dilation, groups)
            (gx,) = torch.autograd.grad((y.sin() * y).sum(), x, create_graph=True)
            (ggx,) = torch.autograd.grad((gx**2).sum(), x)
        return y, gx, ggx

    for got, want in zip(second_order(True), second_order(False), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_eval_batchnorm_is_its_folded_affine_to_second_order():
    """Eval-mode BatchNorm under `ConstantParameters` (one folded affine) gives the same
    output, input gradient and second-order gradient as F.batch_norm; in train mode it is
    left to F.batch_norm (batch statistics)."""
    g = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        for t in (bn.running_mean, bn.weight, bn.bias):
            t.copy_(torch.randn(3, generator=g))
        bn.running_var.copy_(torch.rand(3, generator=g) + 0.5)
    x0 = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)

    def second_order(constant: bool):
        x = x0.clone().requires_grad_()
        with ConstantParameters() if constant else contextlib.nullcontext():
            y = bn(x)
            (gx,) = torch.autograd.grad((y.tanh() * y).sum(), x, create_graph=True)
            (ggx,) = torch.autograd.grad((gx**2).sum(), x)
        return y, gx, ggx

    for got, want in zip(second_order(True), second_order(False), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    bn.train()
    with OpCounter() as ops, ConstantParameters():
        bn(x0)
    assert ops.by_name["aten.native_batch_norm.default"] == 1


class _InPlaceConsumers(torch.nn.Module):
    """conv -> bn -> Identity -> ReLU(inplace) -> conv -> bn -> relu(x, True) -> conv -> bn
    -> (out-of-place relu) -> pool -> fc: two gated outputs written in place downstream (one
    through an Identity, one by a positional `inplace`), one not. `inplace=False` builds the
    same function without in-place writes."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        nn = torch.nn
        self.inplace = inplace
        self.conv1, self.bn1 = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.drop, self.act = nn.Identity(), nn.ReLU(inplace=inplace)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv3, self.bn3 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.act(self.drop(self.bn1(self.conv1(x))))
        x = torch.nn.functional.relu(self.bn2(self.conv2(x)), self.inplace)
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def test_gates_copy_only_where_a_consumer_writes_in_place():
    """A gate is free (its output a view of the module's) unless a consumer may write it in
    place, seen through an Identity and a positional `inplace=True`: there it is copied (one
    clone per such gate and pass), and SOSP-H's terms equal those of the same network without
    in-place writes."""
    torch.manual_seed(0)
    nets = [_InPlaceConsumers(inplace).double().eval() for inplace in (True, False)]
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.randn(5, 2, 4, 4, dtype=torch.float64), torch.randint(3, (5,))
    terms, clones = [], []
    for net in nets:
        graph = analyze(net, (2, 4, 4))
        with OpCounter() as ops:
            terms.append(curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 5))
        clones.append(ops.by_name["aten.clone.default"])
    assert clones == [2, 0]
    torch.testing.assert_close(terms[0].lambda1, terms[1].lambda1, rtol=1e-12, atol=0)
    torch.testing.assert_close(terms[0].h_theta, terms[1].h_theta, rtol=1e-12, atol=0)


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_matches_autograd_to_second_order_without_zeros(inplace):
    """F.relu under `ConstantParameters` (in place where asked) gives autograd's output, input
    gradient and second-order gradient, and its double backward forms no zeros for the
    activation (autograd's formula for threshold_backward does, and carries them back)."""
    x0 = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def second_order(constant: bool):
        x = x0.clone().requires_grad_()
        with ConstantParameters() if constant else contextlib.nullcontext(), OpCounter() as ops:
            y = F.relu(x * 1.5, inplace=inplace)
            (gx,) = torch.autograd.grad((y * y.sin()).sum(), x, create_graph=True)
            (ggx,) = torch.autograd.grad((gx**2).sum(), x)
        return (y, gx, ggx), ops.by_name["aten.zeros_like.default"]

    (got, zeros), (want, autograd_zeros) = second_order(True), second_order(False)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (zeros, autograd_zeros) == (0, 1)


class _SharedConvOutput(torch.nn.Module):
    """conv1 -> bn1 (conv1's output also read by the residual sum), conv2 -> bn2 alone."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        a = self.conv1(x)
        x = torch.relu(self.bn1(a) + a)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _randomized_norms(net: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t in (m.running_mean, m.weight, m.bias):
                    t.copy_(torch.randn(t.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net


@pytest.mark.parametrize("net", [_SharedConvOutput, _InPlaceConsumers])
def test_a_writer_and_its_norm_share_one_quadratic_gate_with_the_same_terms(net, monkeypatch):
    """A conv whose output only its eval-mode BatchNorm reads shares that norm's gate (one
    quadratic gate, `paired_norms`); a conv whose output is read elsewhere too keeps its own.
    lambda_1, theta_s . H theta_struc and the per-sample Jacobian equal those of one linear
    gate per module (fewer operator calls on a deep network: tests/test_op_count.py)."""
    torch.manual_seed(0)
    model = _randomized_norms(net().double()).eval()
    graph = analyze(model, (2, 4, 4))
    pairs = gates.paired_norms(graph)
    expected = (
        {"bn2": "conv2"} if net is _SharedConvOutput else {f"bn{i}": f"conv{i}" for i in (1, 2, 3)}
    )
    assert pairs == expected
    model.bn2.train()
    assert "bn2" not in gates.paired_norms(graph)
    model.eval()
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.randint(3, (5,), generator=torch.Generator().manual_seed(3))
    results = []
    for paired in (True, False):
        if not paired:
            monkeypatch.setattr(gates, "paired_norms", lambda _graph: {})
        terms = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 5)
        J, _ = curvature.gate_jacobians(graph, x)
        results.append((terms.lambda1, terms.h_theta, J))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
