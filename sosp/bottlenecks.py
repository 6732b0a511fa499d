"""Architectural bottlenecks from pruning masks (SOSP Sec. 3.4, expand-pruning): the units
(layers, blocks, stages) that pruning barely thins, as a width spec that widens them.

A unit's pruning ratio is pruned output channels / output channels, summed over the prunable
layers it holds (the layer itself, or every prunable layer named `unit.*`: a CIFAR ResNet block's
conv1, conv2 and projection shortcut; a stage's blocks; the stem belongs to no block or stage),
averaged over several masks (seeds) of the same dense network. A layer no mask names has ratio 0.

The rule (`select`): a unit is a bottleneck if its ratio is below `threshold` times the mean
ratio of the level's units, and among those the `count` least pruned (ties in network order);
either setting alone is a rule. The paper expands "the least pruned of the three main building
blocks" of ResNet-56 and "the five least pruned layers" of VGG (Sec. 3.4), so `PAPER_RULES`
is count 1 at the stage level and count 5 at the layer level; `find` uses it by default. The
bottlenecks get `multiplier` (the paper's 2) in the spec; `uniform` is the widen-pruning
baseline (every width x 1.1). Only the width spec's units are candidates: a ResNet's stream
layers (stem, conv2, shortcut) count towards their block's and stage's ratios, but widening a
block widens only its inner conv (`sosp.models.cifar_resnet`), which is why the paper widens
whole stages of ResNet-56.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from sosp.errors import BadInput
from sosp.models.base import EVERYWHERE, Widths, checked_multiplier
from sosp.models.cifar_resnet import CifarResNet
from sosp.models.vgg import VGG
from sosp.settings import check_number
from sosp.structures import analyze
from sosp.surgery import Mask


@dataclass(frozen=True)
class Rule:
    """Which units are bottlenecks: at `level`, those below `threshold` x the level's mean
    ratio (None: no bound), the `count` least pruned of them (None: all)."""

    level: str
    count: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and (
            isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1
        ):
            raise BadInput(
                f"bottleneck count must be a whole number of units, at least 1, not "
                f"{self.count!r}; leave it unset to widen every unit below the threshold"
            )
        if self.threshold is not None:
            check_number("bottleneck threshold", self.threshold, {"exclusiveMinimum": 0})


PAPER_RULES: dict[type, Rule] = {CifarResNet: Rule("stage", count=1), VGG: Rule("layer", count=5)}


def prunable_channels(
    model: nn.Module, input_shape: Sequence[int], exclude: str | Sequence[str] | None = None
) -> dict[str, int]:
    """{prunable layer: output channels} of `model` on inputs [C, H, W] `input_shape`, in
    network order (`exclude`: as `sosp.prune` takes it)."""
    graph = analyze(model, input_shape, exclude)
    return {name: layer.out_channels for name, layer in graph.layers.items() if layer.prunable}


def pruned_counts(masks: Sequence[Mask], channels: Mapping[str, int]) -> dict[str, float]:
    """{layer: pruned channels, averaged over `masks`} for every layer of `channels`; `BadInput`
    for no masks, a layer that is not in `channels` or a channel out of range."""
    if not masks:
        raise BadInput("bottlenecks need at least one mask")
    total = dict.fromkeys(channels, 0)
    for mask in masks:
        for name, pruned in mask.items():
            if name not in channels:
                raise BadInput(
                    f"mask prunes {name!r}, which is no prunable layer of the model; prunable: "
                    f"{', '.join(channels)}"
                )
            if any(not 0 <= c < channels[name] for c in pruned):
                raise BadInput(f"mask prunes a channel of {name!r} outside 0..{channels[name] - 1}")
            total[name] += len(set(pruned))
    return {name: n / len(masks) for name, n in total.items()}


def unit_ratios(
    masks: Sequence[Mask], channels: Mapping[str, int], units: Sequence[str]
) -> dict[str, float]:
    """{unit: pruned / output channels of its prunable layers, averaged over `masks`} for each of
    `units` that holds a prunable layer (the layer `unit` or the layers `unit.*`), in order."""
    pruned = pruned_counts(masks, channels)
    out = {}
    for unit in units:
        inside = [n for n in channels if n == unit or n.startswith(unit + ".")]
        if inside:
            out[unit] = sum(pruned[n] for n in inside) / sum(channels[n] for n in inside)
    return out


def select(ratios: Mapping[str, float], rule: Rule) -> list[str]:
    """The bottlenecks among `ratios` ({unit: ratio}) by `rule`, in network order."""
    if rule.count is None and rule.threshold is None:
        raise BadInput("a bottleneck rule needs a count, a threshold or both")
    candidates = list(ratios)
    if rule.threshold is not None and ratios:
        bound = rule.threshold * sum(ratios.values()) / len(ratios)
        candidates = [u for u in candidates if ratios[u] < bound]
    order = list(ratios)
    ranked = sorted(candidates, key=lambda u: (ratios[u], order.index(u)))
    chosen = set(ranked if rule.count is None else ranked[: rule.count])
    return [u for u in order if u in chosen]


def level_ratios(
    model: nn.Module,
    masks: Sequence[Mask],
    input_shape: Sequence[int],
    exclude: str | Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """{level: {unit: pruning ratio}}: "all" every prunable layer of the dense `model`, then
    each level of its width spec (`model.width_levels`: a CIFAR ResNet's "stage", "block",
    "layer" (the inner convs); a VGG's "layer"). Ratios averaged over `masks`."""
    channels = prunable_channels(model, input_shape, exclude)
    out = {"all": unit_ratios(masks, channels, list(channels))}
    for level, units in _width_levels(model).items():
        out[level] = unit_ratios(masks, channels, units)
    return out


def find(
    model: nn.Module,
    masks: Sequence[Mask],
    input_shape: Sequence[int],
    rule: Rule | None = None,
    multiplier: float = 2.0,
    exclude: str | Sequence[str] | None = None,
) -> Widths:
    """The width spec {bottleneck: multiplier} of the dense `model` (a zoo CIFAR ResNet or VGG,
    inputs [C, H, W] `input_shape`) pruned by `masks`; `rule` defaults to the paper's for the
    model (`PAPER_RULES`). `models.create(name, ..., widths=find(...))` builds the expanded
    network."""
    multiplier = checked_multiplier(multiplier, "bottleneck multiplier")
    levels = _width_levels(model)
    rule = rule or next((r for t, r in PAPER_RULES.items() if isinstance(model, t)), None)
    if rule is None:
        raise BadInput(f"no default bottleneck rule for {type(model).__name__}; pass a Rule")
    if rule.level not in levels:
        raise BadInput(
            f"{type(model).__name__} has no level {rule.level!r}; levels: {', '.join(levels)}"
        )
    channels = prunable_channels(model, input_shape, exclude)
    ratios = unit_ratios(masks, channels, levels[rule.level])
    return dict.fromkeys(select(ratios, rule), multiplier)


def uniform(multiplier: float = 1.1) -> Widths:
    """The widen-pruning baseline's spec: every width of the network times `multiplier`."""
    return {EVERYWHERE: checked_multiplier(multiplier, "uniform width multiplier")}


def _width_levels(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """`model.width_levels`, or `BadInput` for a model without a width spec."""
    levels = getattr(model, "width_levels", None)
    if not isinstance(levels, dict):
        raise BadInput(
            f"{type(model).__name__} takes no width spec; the CIFAR ResNets and VGGs of the zoo do"
        )
    return levels
