"""Network Slimming: the order is sorted |gamma| of each channel's BatchNorm; in a
pre-activation net a channel scores the largest |gamma| of the BNs that read it."""

import pytest
import torch

import sosp
from sosp import models
from sosp.errors import BadInput
from tests.brute import setup


def test_order_is_sorted_abs_gamma_on_vgg():
    """On VGG-11 (every conv followed by its own BN) the order equals argsort |gamma|."""
    model = models.create("vgg11", 10, 1, 8)
    g = torch.Generator().manual_seed(1)
    gammas = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                gammas.append(m.weight.abs().clone())
    x = torch.randn(4, 1, 8, 8)
    r = sosp.prune(model, "slimming", 0.4, [(x, torch.zeros(4, dtype=torch.long))], n_samples=4)
    flat = torch.cat(gammas)
    assert [r.scores[s] for s in sorted(r.scores)] != []
    ours = torch.tensor([r.scores[s] for s in r.order])
    assert torch.equal(ours, flat.sort().values[: len(ours)].double())


def test_consumer_batchnorm_gamma_for_pre_activation_channels():
    """TinyNet's conv3 has no BN of its own; its channels are read by bn3 (channels 3, 4)."""
    model, _, x, y = setup()
    r = sosp.prune(model, "slimming", 0.2, [(x, y)], exclude=["hidden"], n_samples=6)
    gamma3 = model.bn3.weight.detach().abs()
    assert r.scores[("conv3", 0)] == pytest.approx(gamma3[3].item())
    assert r.scores[("conv3", 1)] == pytest.approx(gamma3[4].item())
    assert r.scores[("conv1", 2)] == pytest.approx(model.bn1.weight[2].abs().item())


def test_layer_without_batchnorm_is_an_error():
    """TinyNet's hidden Linear has no BN: slimming says so and names the layer."""
    model, _, x, y = setup()
    with pytest.raises(BadInput, match="'hidden'"):
        sosp.prune(model, "slimming", 0.2, [(x, y)], n_samples=6)


def test_densenet_scores_every_channel():
    """Every DenseNet-40 channel gets a consumer gamma (no layer lacks a BN)."""
    model = models.create("densenet40", 10, 1, 8)
    x = torch.randn(2, 1, 8, 8)
    r = sosp.prune(model, "slimming", 0.3, [(x, torch.zeros(2, dtype=torch.long))], n_samples=2)
    assert len(r.scores) == r.report["structures"]
