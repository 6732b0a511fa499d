"""Counting conventions on a network small enough to count by hand."""

from torch import nn

from sosp import counting


def tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False),  # 5x5 -> 3x3
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # grouped, with bias
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_params_include_bn_affine_not_running_stats():
    """params = conv weights + BN gamma/beta + grouped conv weights and bias + linear."""
    expected = 3 * 4 * 9 + (4 + 4) + (4 * 2 * 9 + 4) + (4 * 2 + 2)
    assert counting.count_params(tiny()) == expected


def test_macs_conv_and_linear_only():
    """MACs = k_h k_w c_in/groups c_out H_out W_out per conv + in*out per linear, nothing else."""
    expected = 9 * 3 * 4 * 3 * 3 + 9 * (4 // 2) * 4 * 3 * 3 + 4 * 2
    assert counting.count_macs(tiny(), (3, 5, 5)) == expected


def test_count_leaves_training_mode():
    """Counting runs in eval mode but restores the module's mode."""
    model = tiny().train()
    counting.count(model, (3, 5, 5))
    assert model.training
