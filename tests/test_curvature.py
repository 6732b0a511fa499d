"""Curvature against brute force: J by torch.func.jacrev, H by autograd.functional.hessian,
on a float64 network with conv, BN, a residual sum and a concatenation."""

import pytest
import torch
from torch.func import functional_call

from sosp import curvature
from tests.brute import brute_jacobian, per_structure, setup, structure_param_list

RTOL = 1e-6


def test_structures_of_tiny_net():
    """conv1, conv2, conv3 and hidden are prunable; the classifier is not; bn3 is a consumer."""
    _, graph, _, _ = setup()
    assert [n for n, layer in graph.layers.items() if layer.prunable] == [
        "conv1",
        "conv2",
        "conv3",
        "hidden",
    ]
    assert graph.layers["conv1"].bn == "bn1" and graph.layers["conv3"].bn is None
    assert [c.name for c in graph.consumers] == ["bn3"]
    assert len(graph.structures) == 3 + 3 + 2 + 4


def test_gate_jacobian_matches_jacrev():
    """Per-sample J_n from gates equals phi(x_n) theta_s from the explicit Jacobian."""
    model, graph, x, _ = setup()
    J, out = curvature.gate_jacobians(graph, x)
    torch.testing.assert_close(J, brute_jacobian(model, graph, x), rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(out, model(x))


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_gauss_newton_and_first_order_match_brute_force(loss):
    """G = (1/N) sum_n J_n^T R_n J_n and lambda_1 = theta_s . dL/dtheta, batched over 2 batches."""
    model, graph, x, y = setup(loss)
    res = curvature.gauss_newton(graph, [(x[:4], y[:4]), (x[4:], y[4:])], loss, n_samples=6)
    J = brute_jacobian(model, graph, x)
    out = model(x).detach()
    if loss == "cross_entropy":
        p = out.softmax(1)
        R = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        R = torch.eye(3, dtype=x.dtype).expand(6, 3, 3)
    G = torch.einsum("nds,nde,net->st", J, R, J) / 6
    torch.testing.assert_close(res.second, G, rtol=RTOL, atol=1e-10)

    params = dict(model.named_parameters())
    L = curvature.loss_sum(loss, model(x), y) / 6
    grads = dict(zip(params, torch.autograd.grad(L, list(params.values())), strict=True))
    torch.testing.assert_close(res.lambda1, per_structure(graph, grads), rtol=RTOL, atol=1e-10)
    assert res.n_samples == 6


def test_hessian_vector_matches_explicit_hessian():
    """theta_s . (H theta_struc) equals the explicit Hessian of L over the structure weights
    applied to theta_struc; lambda_1 agrees with the gate computation."""
    model, graph, x, y = setup()
    res = curvature.hessian_terms(graph, [(x[:3], y[:3]), (x[3:], y[3:])], "cross_entropy", 6)

    plist = structure_param_list(graph)
    names = [n for n, _, _ in plist]
    shapes = [p.shape for _, p, _ in plist]
    theta = torch.cat([p.detach().flatten() for _, p, _ in plist])
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in names}

    def loss_of(flat):
        parts = dict(zip(names, flat.split([s.numel() for s in shapes]), strict=True))
        params = {
            **fixed,
            **{k: v.view(s) for (k, v), s in zip(parts.items(), shapes, strict=True)},
        }
        return curvature.loss_sum("cross_entropy", functional_call(model, params, (x,)), y) / 6

    H = torch.autograd.functional.hessian(loss_of, theta)
    hv = dict(zip(names, (H @ theta).split([s.numel() for s in shapes]), strict=True))
    hv = {k: v.view(s) for (k, v), s in zip(hv.items(), shapes, strict=True)}
    torch.testing.assert_close(res.second, per_structure(graph, hv), rtol=RTOL, atol=1e-10)

    gn = curvature.gauss_newton(graph, [(x, y)], "cross_entropy", 6)
    torch.testing.assert_close(res.lambda1, gn.lambda1, rtol=RTOL, atol=1e-10)


def test_label_sampling_is_unbiased():
    """The k-label estimate of G converges to the exact G (mean over many samples)."""
    model, graph, x, y = setup()
    exact = curvature.gauss_newton(graph, [(x, y)], "cross_entropy", 6).second
    g = torch.Generator().manual_seed(0)
    est = curvature.gauss_newton(
        graph, [(x, y)], "cross_entropy", 6, label_samples=4000, generator=g
    ).second
    rel = (est - exact).norm() / exact.norm()
    assert rel < 0.05, rel
    one = curvature.gauss_newton(
        graph, [(x, y)], "cross_entropy", 6, label_samples=1, generator=g
    ).second
    assert (one - exact).norm() / exact.norm() > rel  # a single label is visibly noisier


def test_hessian_off_gives_zero_second_order():
    model, graph, x, y = setup()
    res = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 6, hessian=False)
    assert torch.count_nonzero(res.second) == 0 and torch.count_nonzero(res.lambda1) > 0
