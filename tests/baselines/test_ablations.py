"""first_order is SOSP with H = 0 and diagonal is SOSP-I with G's off-diagonal zeroed, both
checked against the explicit Jacobian and gradient of TinyNet."""

import torch

import sosp
from sosp import methods
from tests.brute import ascending_keeping_one, brute_gauss_newton, setup
from tests.tiny_nets import tiny_theta


def test_first_order_is_abs_theta_dot_gradient():
    model, graph, x, y = setup()
    _, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", tiny_theta())
    r = sosp.prune(model, "first_order", 0.4, [(x, y)], n_samples=6)
    got = torch.tensor([r.scores[s] for s in graph.structures], dtype=lambda1.dtype)
    torch.testing.assert_close(got, lambda1.abs(), rtol=1e-6, atol=1e-12)
    assert r.order == ascending_keeping_one(r.scores)[: len(r.order)]


def test_diagonal_is_sosp_i_without_correlations():
    """diagonal's order is the ascending order of 1/2 |G_ss| + |lambda_1(s)| (greedy on a
    diagonal Q), and its Q is SOSP-I's with the off-diagonal set to zero."""
    model, graph, x, y = setup()
    G, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", tiny_theta())
    crit = 0.5 * G.diagonal().abs() + lambda1.abs()
    want = ascending_keeping_one({s: crit[i].item() for i, s in enumerate(graph.structures)})
    r = sosp.prune(model, "diagonal", 0.6, [(x, y)], n_samples=6)
    assert r.order == want[: len(r.order)]
    ctx = methods.Context(model, graph, [(x, y)], "cross_entropy", 6)
    q_full, q_diag = methods.get("sosp_i")(ctx).q, methods.get("diagonal")(ctx).q
    torch.testing.assert_close(q_diag, q_full.diagonal().diag())
    assert (q_full - q_full.diagonal().diag()).abs().max() > 1e-3  # correlations were dropped
