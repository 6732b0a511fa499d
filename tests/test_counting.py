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


class Functional(nn.Module):
    """A conv called as F.conv2d in forward (as timm's ScaledStdConv2d does), a transposed
    conv, a product `x @ w` and attention over the 4 positions as tokens, fused or explicit."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.up = nn.ConvTranspose2d(6, 2, 2, stride=2)  # 2x2 -> 4x4
        self.proj = nn.Parameter(torch.randn(2, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.conv2d(x, self.w, stride=2, padding=1)  # [1, 6, 2, 2]
        x = self.up(x)  # [1, 2, 4, 4]
        t = x.flatten(2).transpose(1, 2) @ self.proj  # tokens [1, 16, 8]
        q = k = v = t.view(1, 16, 2, 4).transpose(1, 2)  # 2 heads of 4
        if self.fused:
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            a = (q @ k.transpose(-1, -2) / 2).softmax(-1) @ v
        return a.sum((1, 2))


def test_every_conv_and_product_counts_however_it_is_called():
    """F.conv2d in a forward, a transposed conv, x @ w and attention count: conv 9*3*6*2*2, the
    transposed conv 2*2*2 products per input element of 6*2*2, 16*2*8, and QK^T plus AV
    2 heads * 16 * 16 * (4 + 4); fused attention counts as the explicit one."""
    expected = 9 * 3 * 6 * 4 + (6 * 4) * (2 * 2 * 2) + 16 * 2 * 8 + 2 * 16 * 16 * 8
    for fused in (True, False):
        assert counting.count_macs(Functional(fused), (3, 4, 4)) == expected


def test_a_traced_network_counts_as_the_module():
    """fx traces through timm's ScaledStdConv2d into F.conv2d: NF-RegNet-B0's GraphModule
    counts as the module does (its 54 weight-standardized convs were missed when counting
    hooked modules: 3.63M of 13.26M MACs at 32x32), as ptflops counts it."""
    import timm

    from sosp.structures import trace
    from tests.models.test_zoo import ptflops_macs

    model = timm.create_model("nf_regnet_b0", num_classes=10)
    macs = counting.count_macs(model, (3, 32, 32))
    assert counting.count_macs(trace(model, (3, 32, 32)), (3, 32, 32)) == macs == 13_261_696
    assert ptflops_macs(model, (3, 32, 32)) == macs


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
