"""Lubana & Dick's filter-importance measures against brute force on TinyNet: g by
torch.func.grad and the Hessian formed explicitly over every parameter, the measures assembled
per filter from the filter's own weight."""

import pytest
import torch
from torch.func import functional_call

import sosp
from sosp.curvature import flow_terms
from tests.brute import ascending_keeping_one, loss_mean, params_of, setup

FILTERS = ("conv1", "conv2", "conv3", "hidden")  # TinyNet's prunable layers


def brute_g_and_hessian(model, x, y, temperature):
    """(names, shapes, g flat [P], H [P, P]) of L = mean cross-entropy of f(x) / T over every
    parameter of `model`, formed explicitly."""
    params = params_of(model)
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [s.numel() for s in shapes]

    def loss_of(flat):
        parts = {n: v.view(s) for n, v, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return loss_mean("cross_entropy", functional_call(model, parts, (x,)) / temperature, y)

    flat = torch.cat([params[n].flatten() for n in names])
    g = torch.autograd.functional.jacobian(loss_of, flat)
    H = torch.autograd.functional.hessian(loss_of, flat, vectorize=True)
    return names, shapes, g, H


def unflatten(names, shapes, flat):
    parts = flat.split([s.numel() for s in shapes])
    return {n: v.view(s) for n, v, s in zip(names, parts, shapes, strict=True)}


def filter_scores(model, per_param, combine):
    """{(layer, c): combine(theta_c, v_c)} from each filter's own weight row."""
    params = params_of(model)
    out = {}
    for layer in FILTERS:
        w, v = params[f"{layer}.weight"], per_param[f"{layer}.weight"]
        for c in range(w.shape[0]):
            out[(layer, c)] = combine(w[c].flatten(), v[c].flatten()).item()
    return out


def scores_of(method, **options):
    model, _, x, y = setup(n=8)
    r = sosp.prune(model, method, 0.25, [(x, y)], n_samples=8, **options)
    return model, x, y, r


def assert_scores(r, expected):
    assert set(r.scores) == set(expected)
    for s, value in expected.items():
        assert r.scores[s] == pytest.approx(value, rel=1e-9, abs=1e-12), s
    assert r.order == ascending_keeping_one(r.scores)[: len(r.order)]


@pytest.mark.parametrize("temperature", [1.0, 5.0])
def test_loss_preservation_is_sum_of_abs_theta_times_gradient(temperature):
    """loss_preservation scores each filter sum_i |theta_i g_i| of its own weight, g of the mean
    loss with logits / T, and prunes the smallest first."""
    model, x, y, r = scores_of("loss_preservation", temperature=temperature)
    names, shapes, g, _ = brute_g_and_hessian(model, x, y, temperature)
    expected = filter_scores(model, unflatten(names, shapes, g), lambda t, v: (t * v).abs().sum())
    assert_scores(r, expected)


def test_loss_preservation_not_elementwise_is_abs_of_the_dot_product():
    """elementwise=False gives |theta_p . g_p| per filter (first-order Taylor of the removal)."""
    model, x, y, r = scores_of("loss_preservation", elementwise=False)
    names, shapes, g, _ = brute_g_and_hessian(model, x, y, 1.0)
    expected = filter_scores(model, unflatten(names, shapes, g), lambda t, v: (t @ v).abs())
    assert_scores(r, expected)


def test_biased_loss_preservation_is_sum_of_abs_theta_squared_times_gradient():
    """The proposed measure scores sum_i |theta_i^2 g_i| per filter."""
    model, x, y, r = scores_of("biased_loss_preservation")
    names, shapes, g, _ = brute_g_and_hessian(model, x, y, 1.0)
    expected = filter_scores(
        model, unflatten(names, shapes, g), lambda t, v: (t * t * v).abs().sum()
    )
    assert_scores(r, expected)


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grad_norm_is_signed_theta_hessian_gradient(temperature):
    """grad_norm scores theta_p . (H g) with H and g of the mean loss at temperature T over
    every parameter, signed, the most negative pruned first (GraSP's order)."""
    model, x, y, r = scores_of("grad_norm", temperature=temperature)
    names, shapes, g, H = brute_g_and_hessian(model, x, y, temperature)
    expected = filter_scores(model, unflatten(names, shapes, H @ g), lambda t, v: t @ v)
    assert any(v < 0 for v in expected.values())  # the sign matters on this net
    assert_scores(r, expected)


def test_grad_norm_absolute_is_gradient_norm_preservation():
    """absolute=True scores |theta_p . (H g)|."""
    model, x, y, r = scores_of("grad_norm", temperature=1.0, absolute=True)
    names, shapes, g, H = brute_g_and_hessian(model, x, y, 1.0)
    expected = filter_scores(model, unflatten(names, shapes, H @ g), lambda t, v: (t @ v).abs())
    assert_scores(r, expected)


def test_frozen_entries_give_the_gradient_and_hessian_of_the_network_without_them():
    """With entries held at zero by a mask, flow_terms returns g and H g of the loss as a
    function of the other entries only: g restricted to them and H_aa g_a, zeros elsewhere."""
    model, _, x, y = setup(n=8)
    with torch.no_grad():
        model.conv2.weight[1].zero_()
        model.bn2.weight[1] = 0
        model.bn2.bias[1] = 0
    frozen = {k: torch.zeros_like(p, dtype=torch.bool) for k, p in model.named_parameters()}
    frozen["conv2.weight"][1] = True
    frozen["bn2.weight"][1] = True
    frozen["bn2.bias"][1] = True
    terms = flow_terms(model, [(x, y)], "cross_entropy", 8, 3.0, True, frozen)
    names, shapes, g, H = brute_g_and_hessian(model, x, y, 3.0)
    alive = torch.cat([~frozen[n].flatten() for n in names]).double()
    assert g[alive == 0].abs().max() > 0  # the frozen BN entries do have a gradient
    g_a = g * alive
    hg_a = (H @ g_a) * alive
    for n, v in unflatten(names, shapes, g_a).items():
        torch.testing.assert_close(terms.grad[n], v, rtol=1e-9, atol=1e-12)
    for n, v in unflatten(names, shapes, hg_a).items():
        torch.testing.assert_close(terms.hessian_grad[n], v, rtol=1e-9, atol=1e-12)


def test_temperature_must_be_positive():
    """A temperature of 0 or below stops with a message naming it."""
    model, _, x, y = setup()
    with pytest.raises(sosp.errors.BadInput, match="temperature"):
        flow_terms(model, [(x, y)], "cross_entropy", 6, 0.0)
