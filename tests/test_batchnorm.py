"""BatchNorm recalibration for pruning at initialization."""

import torch

import sosp
from sosp import batchnorm, models
from tests.tiny_nets import TinyNet, randomized


def test_recalibrated_statistics_are_the_batch_statistics():
    """After recalibration on one batch, bn1's running mean and variance are the mean and
    unbiased variance of conv1's output over that batch; dropout-free, weights unchanged."""
    model = randomized(TinyNet())
    weights = {k: v.clone() for k, v in model.named_parameters()}
    x = torch.randn(16, 2, 4, 4, dtype=torch.float64)
    info = batchnorm.recalibrate(model, [(x, None)])
    with torch.no_grad():
        u = model.conv1(x)
    torch.testing.assert_close(model.bn1.running_mean, u.mean((0, 2, 3)))
    torch.testing.assert_close(model.bn1.running_var, u.var((0, 2, 3), unbiased=True))
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())
    assert info["samples"] == 16 and info["batchnorms"] == 3
    assert not model.training


def test_untrained_resnet56_is_recalibrated_before_pruning():
    """A fresh ResNet-56's eval-mode logits explode (initial statistics 0 and 1); with
    recalibrate_bn they have standard deviation below 10, the pruned copy carries the new
    statistics, and the model passed in keeps its own."""
    torch.manual_seed(0)
    model = models.create("resnet56", 10, 3, 16)
    x = torch.randn(64, 3, 16, 16)
    data = [(x[:32], torch.randint(10, (32,))), (x[32:], torch.randint(10, (32,)))]
    assert batchnorm.logit_std(model, data) > 100
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64, recalibrate_bn=True)
    info = r.report["bn_recalibration"]
    assert info["logit_std_before"] > 100 and info["logit_std_after"] < 10
    assert batchnorm.logit_std(r.model, data) < 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    off = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64, recalibrate_bn=False)
    assert off.report["bn_recalibration"] is None and off.order != r.order


def test_unset_recalibrates_exactly_the_networks_with_initial_statistics():
    """With recalibrate_bn unset, `sosp.prune` re-estimates the statistics of an untrained
    ResNet-56 (every BatchNorm at mean 0, variance 1) and the report says so and why: its
    eval-mode logits then have standard deviation below 10 (hundreds before) and the order
    is the forced one's; a network whose statistics moved (one training-mode pass) is left
    alone, as with recalibrate_bn=False."""
    torch.manual_seed(0)
    model = models.create("resnet56", 10, 3, 16)
    x = torch.randn(64, 3, 16, 16)
    data = [(x[:32], torch.randint(10, (32,))), (x[32:], torch.randint(10, (32,)))]
    assert batchnorm.has_initial_statistics(model)
    auto = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64)
    info = auto.report["bn_recalibration"]
    assert auto.report["recalibrate_bn"] and info["because"] == "initial statistics"
    assert info["logit_std_before"] > 100 and batchnorm.logit_std(auto.model, data) < 10
    forced = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64, recalibrate_bn=True)
    assert forced.report["bn_recalibration"]["because"] == "asked"
    assert forced.order == auto.order
    model.train()
    with torch.no_grad():
        model(x)
    assert not batchnorm.has_initial_statistics(model)
    trained = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64)
    assert not trained.report["recalibrate_bn"] and trained.report["bn_recalibration"] is None
    kept = sosp.prune(model, "sosp_h", 0.5, data, n_samples=64, recalibrate_bn=False)
    assert trained.order == kept.order
