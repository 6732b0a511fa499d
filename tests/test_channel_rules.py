"""Each channel construct beyond plain convolutions (squeeze-and-excitation behind a fused
norm-activation, a grouped convolution, a split and a channel slice) against brute force on a
tiny float64 network: SOSP-I's G and lambda_1 and SOSP-H's theta_s . H theta_struc equal the
explicit Jacobian and Hessian over the hand-written theta_s (tests/tiny_nets.py), and zeroing
theta_s computes what the physically pruned network computes."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sosp import curvature
from sosp.structures import Unsupported, analyze
from sosp.surgery import build_pruned, soft_masked
from tests.brute import brute_gauss_newton, brute_hessian_term, zeroed
from tests.tiny_nets import CONSTRUCTS, SqueezeExciteNet, randomized, squeeze_excite_theta

RTOL = 1e-6
SHAPE = (2, 4, 4)


def setup(name):
    net, theta = CONSTRUCTS[name]
    torch.manual_seed(0)
    model = randomized(net())
    x = torch.randn(6, *SHAPE, dtype=torch.float64)
    y = torch.randint(3, (6,))
    return model, analyze(model, SHAPE), theta(), x, y


@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_structures_are_the_hand_written_ones(name):
    """The analysis finds exactly the structures of the hand-written theta, in graph order."""
    _, graph, theta, _, _ = setup(name)
    assert graph.structures == list(theta)


@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_curvature_matches_brute_force(name):
    """G, lambda_1 (gates) and H theta (double backpropagation) equal the brute force."""
    model, graph, theta, x, y = setup(name)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    res = curvature.gauss_newton(graph, batches, "cross_entropy", n_samples=6)
    G, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", theta)
    assert G.abs().max() > 1e-6  # not a vacuous equality
    torch.testing.assert_close(res.G, G, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(res.lambda1, lambda1, rtol=RTOL, atol=1e-10)
    hvp = curvature.hessian_terms(graph, batches, "cross_entropy", 6)
    with sdpa_kernel(SDPBackend.MATH):  # torch's attention in a twice-differentiable form
        want = brute_hessian_term(model, x, y, "cross_entropy", theta)
    torch.testing.assert_close(hvp.h_theta, want, rtol=RTOL, atol=1e-10)


@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_zeroing_theta_s_is_the_removal(name):
    """For every structure s, zeroing theta_s gives the function of the network surgery
    builds without s; most of those functions differ from the dense one (a channel behind a
    ReLU may be zero on these inputs anyway)."""
    model, graph, theta, x, _ = setup(name)
    changed = 0
    with torch.no_grad():
        dense = model(x)
        for i, (s, entries) in enumerate(theta.items()):
            want = zeroed(model, entries)(x)
            changed += not torch.allclose(want, dense)
            torch.testing.assert_close(build_pruned(graph, [i]).eval()(x), want, msg=str(s))
    assert changed > len(theta) / 2


@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_pruning_several_structures_equals_the_soft_mask(name):
    """Pruning every other structure: the small network equals the soft-masked one."""
    model, graph, _, x, _ = setup(name)
    pruned = list(range(0, len(graph.structures), 2))
    with torch.no_grad():
        want = soft_masked(model, graph, pruned).eval()(x)
        torch.testing.assert_close(build_pruned(graph, pruned).eval()(x), want)


def test_hessian_through_a_hardsigmoid_gate():
    """PyTorch has no second derivative of hardsigmoid (MobileNetV3's SE gates); SOSP-H
    computes through the equal relu6(x + 3) / 6: on an SE net gated by hardsigmoid its
    theta_s . H theta_struc equals the brute force on the same net gated by relu6(x + 3) / 6."""
    torch.manual_seed(0)
    model = randomized(SqueezeExciteNet(F.hardsigmoid))
    twin = randomized(SqueezeExciteNet(lambda e: F.relu6(e + 3) / 6))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(6, *SHAPE, dtype=torch.float64), torch.randint(3, (6,))
    torch.testing.assert_close(model(x), twin(x))
    graph = analyze(model, SHAPE)
    hvp = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 6)
    want = brute_hessian_term(twin, x, y, "cross_entropy", squeeze_excite_theta())
    torch.testing.assert_close(hvp.h_theta, want, rtol=RTOL, atol=1e-10)


def test_fused_attention_gives_the_explicit_attentions_terms():
    """PyTorch cannot differentiate fused scaled-dot-product attention twice; SOSP-H computes
    through its explicit form (`TwiceDifferentiable`): on the tiny ViT with fused attention G,
    lambda_1 and H theta equal those of the same weights with timm's explicit attention (which
    the brute force above checks)."""
    from tests.tiny_nets import TinyViT

    torch.manual_seed(0)
    explicit = randomized(TinyViT(fused=False))
    fused = randomized(TinyViT(fused=True))
    fused.load_state_dict(explicit.state_dict())
    x, y = torch.randn(6, *SHAPE, dtype=torch.float64), torch.randint(3, (6,))
    terms = []
    for model in (fused, explicit):
        graph = analyze(model, SHAPE)
        gn = curvature.gauss_newton(graph, [(x, y)], "cross_entropy", 6)
        hs = curvature.hessian_terms(graph, [(x, y)], "cross_entropy", 6)
        terms.append((gn.G, gn.lambda1, hs.h_theta))
    assert terms[0][2].abs().max() > 1e-6
    for got, want in zip(*terms, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_multihead_attention_refuses_an_input_that_pruning_can_narrow():
    """nn.MultiheadAttention's input projection needs the query's full width: reading the
    patch embedding's channels directly (no position embedding keeps them), the analysis
    stops naming the attention; with the patch embedding excluded it analyses."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = torch.nn.Conv2d(2, 4, 2, stride=2)
            self.attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            return self.fc(self.attn(x, x, x)[0].mean(1))

    with pytest.raises(Unsupported, match=r"'attn'.*needs every channel of 'transpose'"):
        analyze(Net(), SHAPE)
    graph = analyze(Net(), SHAPE, exclude=["patch"])
    assert {name for name, _ in graph.structures} == {"attn"}
