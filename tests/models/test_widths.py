"""Width specifications of the CIFAR ResNets and VGGs: counts of widened networks by hand,
defaults untouched, rounding, and the names a spec may use."""

import json

import pytest
import torch

import sosp
from sosp import counting, models
from sosp.errors import BadInput
from sosp.models.base import scaled_width

SHAPE = (1, 8, 8)  # digits


def tiny(name: str, **options) -> torch.nn.Module:
    return models.create(name, 10, in_channels=1, image_size=8, **options)


def conv(c_in: int, c_out: int, k: int = 3) -> int:
    """Params of a bias-free conv and its BatchNorm."""
    return k * k * c_in * c_out + 2 * c_out


def test_widened_resnet_counts_by_hand():
    """resnet20 with stage 2 doubled (stream 64, inner 64) and block layer3.1's inner width
    doubled (128) has the hand-computed params and MACs (8x8 input: 8x8, 4x4, 2x2 maps)."""
    model = tiny("resnet20", widths={"layer2": 2.0, "layer3.1.conv1": 2.0})
    stem, stage1 = conv(1, 16), 6 * conv(16, 16)
    stage2 = conv(16, 64) + conv(64, 64) + conv(16, 64, 1) + 4 * conv(64, 64)
    stage3 = 2 * conv(64, 64) + conv(64, 64, 1) + conv(64, 128) + conv(128, 64) + 2 * conv(64, 64)
    fc = 64 * 10 + 10
    macs = (
        9 * 1 * 16 * 64  # stem
        + 6 * 9 * 16 * 16 * 64  # stage 1
        + (9 * 16 * 64 + 5 * 9 * 64 * 64 + 16 * 64) * 16  # stage 2
        + (4 * 9 * 64 * 64 + 64 * 64 + 2 * 9 * 64 * 128) * 4  # stage 3
        + 64 * 10
    )
    assert counting.count(model, SHAPE) == counting.Counts(
        params=stem + stage1 + stage2 + stage3 + fc, macs=macs
    )
    assert (stem + stage1 + stage2 + stage3 + fc, macs) == (510_330, 5_203_584)


def test_uniform_vgg_counts_by_hand():
    """vgg11_quarter with every width x 1.1 rounds 16, 32, 64, 128 to 18, 35, 70, 141 and has
    the hand-computed params and MACs (8x8 input; its last pool is skipped at 1x1)."""
    model = tiny("vgg11_quarter", widths={"*": 1.1})
    params = (
        conv(1, 18) + conv(18, 35) + conv(35, 70) + conv(70, 70) + conv(70, 141)
        + 3 * conv(141, 141) + 141 * 10 + 10
    )  # fmt: skip
    macs = 9 * (1 * 18 * 64 + 18 * 35 * 16 + (35 * 70 + 70 * 70) * 4 + (70 * 141 + 3 * 141 * 141))
    assert counting.count(model, SHAPE) == counting.Counts(params=params, macs=macs + 1410)


@pytest.mark.parametrize("name", ["resnet20", "resnet20_zeropad", "vgg11_quarter"])
def test_neutral_spec_is_the_default_model(name):
    """No spec, an empty one and one of multipliers 1 build the same parameters bit for bit from
    the same seed (the width code leaves the default network and its initialization alone)."""
    states = []
    for widths in (None, {}, {"*": 1.0, tiny(name).width_levels["layer"][0]: 1.0}):
        torch.manual_seed(0)
        states.append(tiny(name, widths=widths).state_dict())
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[k], states[0][k]) for k in state)


def test_rounding_is_half_up_in_decimal():
    """Widths round half up on the decimal product (45 x 0.7 = 31.5 -> 32, though the float
    product is 31.4999...), multipliers compose, and half a channel rounds up to one."""
    assert scaled_width(45, {"*": 0.7}) == 32
    assert scaled_width(16, {"*": 1.03125}) == 17  # round() would give 16
    assert scaled_width(16, {"*": 1.1, "a": 2.0, "b": 3.0}, "a") == 35  # 35.2
    assert scaled_width(4, {"*": 0.125}) == 1


def test_a_width_rounded_to_no_channel_is_refused():
    """A spec that makes a layer narrower than half a channel is refused with the product it
    gives and the smallest product that keeps one channel, not built with a width of 1."""
    with pytest.raises(BadInput, match=r"\*=0.01 makes a layer of 3 channels 0.03 channels wide"):
        scaled_width(3, {"*": 0.01})
    with pytest.raises(BadInput, match=r"\*=0.5 x a=0.05 .* at least 0.0312 \(half a channel"):
        scaled_width(16, {"*": 0.5, "a": 0.05}, "a")
    with pytest.raises(BadInput, match="rounds to none"):
        tiny("resnet20", widths={"*": 0.01})


def test_spec_is_recorded_and_json_serializable():
    """The model keeps its spec as {str: float}, which survives a JSON round trip."""
    model = tiny("resnet20", widths={"layer2": 2, "*": 1.1})
    assert model.widths == {"layer2": 2.0, "*": 1.1}
    assert json.loads(json.dumps(model.widths)) == model.widths


def test_widened_model_prunes():
    """A widened resnet20 prunes with SOSP-H; the mask stays within the widened layers."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, *SHAPE, generator=g), torch.randint(10, (8,), generator=g))]
    model = tiny("resnet20", widths={"layer2": 2.0, "layer3.0": 2.0})
    r = sosp.prune(model, "sosp_h", 0.3, batches * 2, n_samples=16)
    assert r.report["after"]["params"] < r.report["before"]["params"]
    assert max(r.mask["layer3.0.conv1"]) < 128


@pytest.mark.parametrize(
    ("name", "widths", "match"),
    [
        ("resnet20", {"layer4": 2.0}, "known names: \\*, layer1, layer2, layer3, layer1.0"),
        ("resnet20", {"layer1.3": 2.0}, "layer3.2.conv1"),
        ("resnet20", {"layer2.1.conv2": 2.0}, "residual stream; widen its stage 'layer2'"),
        ("resnet20", {"conv1": 2.0}, "stage 'layer1'"),
        ("resnet20", {"layer2": 0.0}, "must be > 0"),
        ("resnet20", {"*": 1e6}, "must be > 0 and at most 16, not 1000000.0"),
        ("vgg11_quarter", {"*": float("inf")}, "at most 16, not inf"),
        ("resnet20", {"layer2": "2"}, "must be a number"),
        ("vgg11_quarter", {"features.3": 2.0}, "features.0, features.4"),
    ],
)
def test_bad_names_and_multipliers_raise(name, widths, match):
    """A spec naming a unit the model lacks (or a stream layer, or a multiplier that is not a
    positive number) raises BadInput that names the known units."""
    with pytest.raises(BadInput, match=match):
        tiny(name, widths=widths)


def test_zeropad_shortcut_cannot_narrow():
    """Widening stage 1 beyond stage 2 under zero-padding shortcuts is refused clearly."""
    with pytest.raises(BadInput, match="cannot narrow 64 to 32"):
        tiny("resnet20_zeropad", widths={"layer1": 4.0})
