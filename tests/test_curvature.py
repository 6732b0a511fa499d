"""Curvature against brute force (tests/brute.py: explicit Jacobian and Hessian, a hand-written
structure -> parameter map) on a float64 network with conv, BN, a residual sum, a
concatenation read by a consumer BN, and a linear layer."""

import pytest
import torch

from sosp import curvature
from sosp.structures import Unsupported, analyze
from sosp.surgery import build_pruned
from tests.brute import (
    brute_gauss_newton,
    brute_hessian_term,
    brute_jacobian,
    setup,
    zeroed,
)
from tests.tiny_nets import TinyNet, tiny_theta, tiny_theta_stream

RTOL = 1e-6
AFFINE = pytest.mark.parametrize("affine", [True, False], ids=["affine_bn", "plain_bn"])


def test_structures_of_tiny_net():
    """conv1, conv2, conv3 and hidden are prunable, in graph order; the classifier is not;
    bn3 is a consumer."""
    _, graph, _, _ = setup()
    assert graph.structures == list(tiny_theta())
    assert graph.layers["conv1"].bn == "bn1" and graph.layers["conv3"].bn is None
    assert [c.name for c in graph.consumers] == ["bn3"]


@AFFINE
def test_gate_jacobian_matches_jacrev(affine):
    """Per-sample J_n from gates equals phi(x_n) theta_s from the explicit Jacobian, with theta_s
    as written by hand: a BN without gamma/beta holds no part of it, and conv3's theta_s
    includes its slice of the consumer bn3."""
    model, graph, x, _ = setup(affine=affine)
    J, out = curvature.gate_jacobians(graph, x)
    torch.testing.assert_close(
        J, brute_jacobian(model, x, tiny_theta(affine)), rtol=RTOL, atol=1e-10
    )
    torch.testing.assert_close(out, model(x))


@AFFINE
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_gauss_newton_and_first_order_match_brute_force(loss, affine):
    """G = (1/N) sum_n J_n^T R_n J_n and lambda_1 = theta_s . dL/dtheta, batched over 2 batches."""
    model, graph, x, y = setup(loss, affine=affine)
    res = curvature.gauss_newton(graph, [(x[:4], y[:4]), (x[4:], y[4:])], loss, n_samples=6)
    G, lambda1 = brute_gauss_newton(model, x, y, loss, tiny_theta(affine))
    torch.testing.assert_close(res.G, G, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(res.lambda1, lambda1, rtol=RTOL, atol=1e-10)
    assert res.n_samples == 6


@AFFINE
def test_hessian_vector_matches_explicit_hessian(affine):
    """theta_s . (H theta_struc) equals the explicit Hessian of L over the structure weights
    applied to theta_struc (bn3's stream channels excluded); lambda_1 agrees with brute force."""
    model, graph, x, y = setup(affine=affine)
    res = curvature.hessian_terms(graph, [(x[:3], y[:3]), (x[3:], y[3:])], "cross_entropy", 6)
    theta = tiny_theta(affine)
    want = brute_hessian_term(model, x, y, "cross_entropy", theta)
    torch.testing.assert_close(res.h_theta, want, rtol=RTOL, atol=1e-10)
    _, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", theta)
    torch.testing.assert_close(res.lambda1, lambda1, rtol=RTOL, atol=1e-10)


def test_a_model_in_train_mode_is_judged_in_eval_mode():
    """Saliencies use BN running statistics (samples independent) even when the model comes
    in train mode, and the model is handed back in train mode."""
    model, graph, x, y = setup()
    theta = tiny_theta()
    G, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", theta)
    h_theta = brute_hessian_term(model, x, y, "cross_entropy", theta)
    model.train()
    gn = curvature.gauss_newton(graph, [(x, y)], "cross_entropy", 6)
    hs = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 6)
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(gn.G, G, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(gn.lambda1, lambda1, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(hs.h_theta, h_theta, rtol=RTOL, atol=1e-10)


def test_zeroing_theta_s_is_the_removal_surgery_applies():
    """For every structure s, the network with theta_s (by hand) set to zero computes what the
    physically pruned network computes: the saliency models the change that is applied
    (conv3's theta_s includes its slice of the consumer bn3, whose shift removal drops)."""
    model, graph, x, _ = setup()
    for i, (s, entries) in enumerate(tiny_theta().items()):
        with torch.no_grad():
            want = zeroed(model, entries)(x)
            torch.testing.assert_close(build_pruned(graph, [i]).eval()(x), want, msg=str(s))


@AFFINE
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_stream_coupled_structures_match_brute_force(loss, affine):
    """With coupling="stream", theta_s of a residual stream channel is the union of its writers'
    slices and of bn3's slice of it (written by hand): J, G, lambda_1 and
    theta_s . (H theta_struc) equal brute force on that map, so SOSP-I and SOSP-H extend
    exactly."""
    model, _, x, y = setup(loss, affine=affine)
    graph = analyze(model, (2, 4, 4), coupling="stream")
    theta = tiny_theta_stream(affine)
    assert graph.structures == list(theta)
    J, _ = curvature.gate_jacobians(graph, x)
    torch.testing.assert_close(J, brute_jacobian(model, x, theta), rtol=RTOL, atol=1e-10)
    res = curvature.gauss_newton(graph, [(x[:4], y[:4]), (x[4:], y[4:])], loss, n_samples=6)
    G, lambda1 = brute_gauss_newton(model, x, y, loss, theta)
    torch.testing.assert_close(res.G, G, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(res.lambda1, lambda1, rtol=RTOL, atol=1e-10)
    hs = curvature.hessian_terms(graph, [(x[:3], y[:3]), (x[3:], y[3:])], loss, 6)
    want = brute_hessian_term(model, x, y, loss, theta)
    torch.testing.assert_close(hs.h_theta, want, rtol=RTOL, atol=1e-10)


def test_zeroing_a_stream_channel_is_the_removal_surgery_applies():
    """Zeroing theta_s of a coupled stream channel (by hand) gives the physically pruned
    network's function, and that network's stream is narrower with no scatter or index-add."""
    model, _, x, _ = setup()
    graph = analyze(model, (2, 4, 4), coupling="stream")
    for i, (s, entries) in enumerate(tiny_theta_stream().items()):
        small = build_pruned(graph, [i]).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(x), zeroed(model, entries)(x), msg=str(s))
        assert not any(type(m).__name__ in ("IndexAdd", "ChannelScatter") for m in small.modules())
    assert build_pruned(graph, [0]).conv2.out_channels == 2


def test_label_sampling_is_unbiased():
    """The k-label estimate of G converges to the exact G (mean over many samples)."""
    model, graph, x, y = setup()
    exact = curvature.gauss_newton(graph, [(x, y)], "cross_entropy", 6).G
    g = torch.Generator().manual_seed(0)
    est = curvature.gauss_newton(
        graph, [(x, y)], "cross_entropy", 6, label_samples=4000, generator=g
    ).G
    rel = (est - exact).norm() / exact.norm()
    assert rel < 0.05, rel
    one = curvature.gauss_newton(
        graph, [(x, y)], "cross_entropy", 6, label_samples=1, generator=g
    ).G
    assert (one - exact).norm() / exact.norm() > rel  # a single label is visibly noisier


def test_hessian_off_gives_zero_second_order():
    model, graph, x, y = setup()
    res = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 6, hessian=False)
    assert torch.count_nonzero(res.h_theta) == 0 and torch.count_nonzero(res.lambda1) > 0


def test_batchnorm_without_running_statistics_is_refused():
    """A BN that normalizes by batch statistics in eval mode couples samples: a clear error."""
    model = TinyNet()
    model.bn2 = torch.nn.BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(Unsupported, match="track_running_stats=False.*'bn2'|'bn2'.*track_running"):
        analyze(model, (2, 4, 4))


def with_fused_bn2(model, act=torch.nn.ReLU):
    """`model` with bn2 replaced by timm's BatchNormAct2d (BN then `act`, one module) holding
    the same parameters and statistics."""
    from timm.layers import BatchNormAct2d

    fused = BatchNormAct2d(3, act_layer=act).to(torch.float64)
    fused.load_state_dict(model.bn2.state_dict())
    model.bn2 = fused
    return model.eval()


def test_fused_norm_activation_matches_brute_force_and_surgery():
    """timm's BatchNormAct2d with ReLU (a BatchNorm subclass holding its activation) is one
    norm node: G, lambda_1 and SOSP-H's H theta equal the brute force over the same
    hand-written theta (its gamma/beta keep BN's names), and zeroing each theta_s is what the
    physically pruned network computes."""
    model, _, x, y = setup()
    model = with_fused_bn2(model)
    graph = analyze(model, (2, 4, 4))
    res = curvature.gauss_newton(graph, [(x[:3], y[:3]), (x[3:], y[3:])], "cross_entropy", 6)
    G, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", tiny_theta())
    torch.testing.assert_close(res.G, G, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(res.lambda1, lambda1, rtol=RTOL, atol=1e-10)
    hvp = curvature.hessian_terms(graph, [(x[:3], y[:3]), (x[3:], y[3:])], "cross_entropy", 6)
    want = brute_hessian_term(model, x, y, "cross_entropy", tiny_theta())
    torch.testing.assert_close(hvp.h_theta, want, rtol=RTOL, atol=1e-10)
    for i, (s, entries) in enumerate(tiny_theta().items()):
        with torch.no_grad():
            want = zeroed(model, entries)(x)
            torch.testing.assert_close(build_pruned(graph, [i]).eval()(x), want, msg=str(s))


def test_fused_norm_with_an_activation_that_maps_zero_elsewhere_is_refused():
    """Hardsigmoid inside the norm module maps 0 to 0.5, so a pruned channel would not be
    zero after it: analysis stops naming the module, the activation and the fix."""
    model, *_ = setup()
    with pytest.raises(Unsupported, match=r"bn2.*Hardsigmoid.*bn2\.act.*zero-preserving"):
        analyze(with_fused_bn2(model, torch.nn.Hardsigmoid), (2, 4, 4))
