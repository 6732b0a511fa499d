"""Bottlenecks from hand-made masks: known ratios give known bottlenecks and the width spec that
builds the expanded network."""

import pytest

from sosp import bottlenecks, models
from sosp.bottlenecks import Rule
from sosp.errors import BadInput

SHAPE = (1, 8, 8)


def resnet20(**options):
    return models.create("resnet20", 10, in_channels=1, image_size=8, **options)


def prune_every(channels: dict[str, int], fraction: float, keep: str = "") -> dict:
    """A mask pruning the first `fraction` of every layer's channels, except layers that start
    with `keep`."""
    return {
        n: list(range(int(c * fraction)))
        for n, c in channels.items()
        if not (keep and n.startswith(keep))
    }


@pytest.fixture(scope="module")
def dense():
    return resnet20()


@pytest.fixture(scope="module")
def channels(dense):
    return bottlenecks.prunable_channels(dense, SHAPE)


def test_ratios_by_level(dense, channels):
    """Layer, block and stage ratios pool pruned / output channels over a unit's prunable
    layers (conv1, conv2, shortcut) and average over masks: stage 2 pruned by 1/2 in one mask
    and 1/4 in the other has ratio 3/8; its block 0 likewise; the untouched stem has 0."""
    half = prune_every({n: c for n, c in channels.items() if n.startswith("layer2")}, 0.5)
    quarter = prune_every(channels, 0.25, keep="conv1")
    ratios = bottlenecks.level_ratios(dense, [half, quarter], SHAPE)
    assert ratios["all"]["conv1"] == 0.0
    assert ratios["all"]["layer2.0.shortcut.0"] == (16 + 8) / 32 / 2
    assert ratios["stage"] == {"layer1": 0.125, "layer2": 0.375, "layer3": 0.125}
    assert ratios["block"]["layer2.0"] == 0.375
    assert tuple(ratios["layer"]) == dense.width_levels["layer"]
    assert ratios["layer"]["layer3.2.conv1"] == 0.125


def test_paper_rule_widens_the_least_pruned_stage(dense, channels):
    """The default rule for a ResNet (the paper's: the least pruned of the three stages) names
    the stage a mask spares, with multiplier 2, and that spec builds the expanded network."""
    mask = prune_every(channels, 0.5, keep="layer3")
    spec = bottlenecks.find(dense, [mask], SHAPE)
    assert spec == {"layer3": 2.0}
    wide = resnet20(widths=spec)
    assert wide.layer3[2].conv2.out_channels == 128 and wide.layer2[2].conv1.out_channels == 32


def test_paper_rule_for_vgg_takes_five_layers():
    """VGG's default rule (the paper's) names its five least pruned conv layers."""
    vgg = models.create("vgg11_quarter", 10, in_channels=1, image_size=8)
    channels = bottlenecks.prunable_channels(vgg, SHAPE)
    names = vgg.width_levels["layer"]  # 8 convs; pruned by about 0.8, 0.7, ..., 0.1
    mask = {n: list(range(int(channels[n] * (8 - i) / 10))) for i, n in enumerate(names)}
    assert bottlenecks.find(vgg, [mask], SHAPE) == dict.fromkeys(names[3:], 2.0)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (Rule("x", threshold=0.5), ["c", "d"]),  # mean 0.4: below 0.2
        (Rule("x", count=1), ["d"]),
        (Rule("x", count=3), ["b", "c", "d"]),  # b, e tie at 0.6: network order
        (Rule("x", count=1, threshold=0.5), ["d"]),
        (Rule("x", threshold=0.2), ["d"]),  # bound 0.08
    ],
)
def test_select_rules(rule, expected):
    """A threshold keeps units below threshold x the mean ratio, a count the least pruned (ties
    in network order), both together the count least pruned below the threshold; the result is
    in network order."""
    ratios = {"a": 0.7, "b": 0.6, "c": 0.1, "d": 0.0, "e": 0.6}
    assert bottlenecks.select(ratios, rule) == expected


def test_block_level_and_uniform(dense, channels):
    """At the block level the spec names blocks (their inner width widens); `uniform` is every
    width x multiplier."""
    mask = prune_every(channels, 0.5, keep="layer2.1")
    spec = bottlenecks.find(dense, [mask], SHAPE, Rule("block", count=1), multiplier=3.0)
    assert spec == {"layer2.1": 3.0}
    assert resnet20(widths=spec).layer2[1].conv1.out_channels == 96
    assert bottlenecks.uniform(1.1) == {"*": 1.1}
    assert resnet20(widths=bottlenecks.uniform(1.1)).layer3[0].conv2.out_channels == 70


@pytest.mark.parametrize(
    ("masks", "rule", "match"),
    [
        ([{"layer9.conv": [0]}], None, "no prunable layer.*prunable: conv1, layer1.0.conv1"),
        ([{"conv1": [16]}], None, "outside 0..15"),
        ([], None, "at least one mask"),
        ([{}], Rule("layer"), "needs a count, a threshold"),
        ([{}], Rule("stages", count=1), "levels: stage, block, layer"),
    ],
)
def test_bad_input_raises(dense, masks, rule, match):
    """Unknown layers, channels out of range, no masks, an empty rule and an unknown level raise
    BadInput saying what is known."""
    with pytest.raises(BadInput, match=match):
        bottlenecks.find(dense, masks, SHAPE, rule)


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"count": 0}, "count must be a whole number of units, at least 1, not 0"),
        ({"count": -1}, "at least 1, not -1"),
        ({"count": 1.5}, "at least 1, not 1.5"),
        ({"threshold": 0.0}, "threshold must be greater than 0, not 0.0"),
        ({"threshold": float("nan")}, "threshold must be greater than 0, not nan"),
    ],
)
def test_rules_that_can_select_nothing_are_refused(rule, match):
    """A count below 1 or a threshold that is not a positive number would widen nothing
    whatever the masks: the rule refuses it on construction."""
    with pytest.raises(BadInput, match=match):
        Rule("stage", **rule)


@pytest.mark.parametrize("multiplier", [0.0, -2.0, float("inf"), 1e6])
def test_multipliers_outside_the_width_range_are_refused(dense, channels, multiplier):
    """`find` and `uniform` refuse a multiplier the width spec would refuse (not positive, not
    finite, or beyond MAX_MULTIPLIER) instead of returning a spec no model can be built from."""
    mask = prune_every(channels, 0.5, keep="layer2.1")
    with pytest.raises(BadInput, match="multiplier must be > 0 and at most 16"):
        bottlenecks.find(dense, [mask], SHAPE, multiplier=multiplier)
    with pytest.raises(BadInput, match="multiplier must be > 0 and at most 16"):
        bottlenecks.uniform(multiplier)


def test_model_without_width_spec_is_refused():
    """A model that takes no width spec gets a clear BadInput, not an AttributeError."""
    densenet = models.create("densenet40", 10, in_channels=1, image_size=8)
    with pytest.raises(BadInput, match="takes no width spec"):
        bottlenecks.find(densenet, [{}], SHAPE)
