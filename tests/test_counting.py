"""Counting conventions on a network small enough to count by hand."""

import torch
from torch import nn

from sosp import counting
from sosp.api import apply_mask


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


class TinyResidual(nn.Module):
    """stem 3->4 (3x3, 4x4 image), a residual branch c1, c2 (1x1) added back, fc 4->2."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.c1 = nn.Conv2d(4, 4, 1)
        self.c2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = self.c2(torch.relu(self.c1(x)))
        z = torch.relu(y + x)  # the branch first: the main path runs through c2
        return self.fc(z.mean((2, 3)))


def test_main_path_producers_follow_the_branch_not_the_shortcut():
    producers = counting.main_path_producers(TinyResidual(), (3, 4, 4))
    assert producers == {"stem": None, "c1": "stem", "c2": "c1", "fc": "c2"}


def test_ccp_counts_a_pruned_stream_writer_as_removing_the_next_input():
    """c1 keeps 3 of 4 filters, c2 (writing the residual stream) 2 of 4. The stream keeps all
    4 channels (the stem still writes them), so fc reads 4 in the actual count; ccp counts
    fc's input as c2's 2 of 4 channels. Per layer (16 positions):
    actual: stem 9*3*4*16 + c1 4*3*16 + c2 3*2*16 + fc 4*2 = 1728 + 192 + 96 + 8 = 2024;
    ccp:    1728 + 4*4*16*(3/4) + 4*4*16*(2/4)(3/4) + 4*2*(2/4) = 1728 + 192 + 96 + 4 = 2020."""
    dense = TinyResidual()
    pruned = apply_mask(dense, {"c1": [0], "c2": [0, 1]}, (3, 4, 4))
    assert counting.CONVENTIONS["actual"](dense, pruned, (3, 4, 4)) == 2024
    assert counting.CONVENTIONS["ccp"](dense, pruned, (3, 4, 4)) == 2020
    assert counting.ccp_macs(dense, dense, (3, 4, 4)) == counting.count_macs(dense, (3, 4, 4))


def test_ccp_equals_actual_without_skip_connections():
    """On a chain the main-path input is the actual input: both conventions agree."""
    dense = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 9, 2)
    )
    pruned = apply_mask(dense, {"0": [1, 2], "2": [3]}, (3, 5, 5))
    # 9*3*2*9 + 1*2*3*9 + (3*9)*2: the Linear reads 3 of 4 channels at 9 positions
    assert counting.ccp_macs(dense, pruned, (3, 5, 5)) == 486 + 54 + 54
    assert counting.actual_macs(dense, pruned, (3, 5, 5)) == 486 + 54 + 54
