"""What every model plug-in provides: `ModelSpec`s of its architectures (builder, keyword
arguments, a one-line summary, the dataset it is built for), and the width specifications of
width-configurable models (`Widths`: {unit name or "*": multiplier}, see `checked_widths`,
`scaled_width`). Model modules import only this module; `sosp.models.registry` joins their
`MODELS`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from torch import nn

from sosp.errors import BadInput

# builder(num_classes=, in_channels=, image_size=, **kwargs) -> a freshly initialized model
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder, fixed keyword arguments and a one-line summary."""

    builder: Builder
    summary: str
    dataset: str = "cifar10"  # the dataset it is built for by default (cifar10 or imagenet)
    kwargs: dict = field(default_factory=dict)
    # the published weights `sosp import` checks a downloaded file against (None: there are none)
    weights: Callable[[], PublishedWeights] | None = None


@dataclass(frozen=True)
class PublishedWeights:
    """Weights a library publishes for an architecture: where to download them, the start of
    their sha256 (the 8+ hex digits torch.hub names the file by) and their reported top-1 (%)."""

    url: str
    sha256_prefix: str
    top1: float


def kaiming_init(model: nn.Module) -> None:
    """He-normal (fan_out, ReLU) initialization of every Conv2d, as the CIFAR models use."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# -- width specifications --------------------------------------------------------------------

Widths = dict[str, float]  # {unit name or "*": width multiplier}, JSON-serializable as it is
EVERYWHERE = "*"  # the key that multiplies every width of the network
# The largest multiplier a spec may give: far beyond the studies' (2, 1.1), small enough that
# a typo (1e6) is refused rather than exhausting memory while building the network.
MAX_MULTIPLIER = 16.0


def checked_widths(
    widths: Mapping[str, float] | None,
    known: Sequence[str],
    stream: Mapping[str, str] | None = None,
) -> Widths:
    """`widths` as {name: float}, every name in `known` or "*", every multiplier a finite
    number > 0; `BadInput` otherwise, naming the known names (`stream`: {layer on a residual
    stream: the stage to widen instead}, for a clearer message)."""
    out: Widths = {}
    stream = stream or {}
    for name, multiplier in (widths or {}).items():
        if name in stream:
            raise BadInput(
                f"width spec names {name!r}, which writes a residual stream; widen its stage "
                f"{stream[name]!r} instead"
            )
        if name != EVERYWHERE and name not in known:
            raise BadInput(
                f"width spec names {name!r}, which the model does not have; known names: "
                f"{', '.join([EVERYWHERE, *known])}"
            )
        out[str(name)] = checked_multiplier(multiplier, f"width multiplier of {name!r}")
    return out


def checked_multiplier(multiplier: object, what: str = "width multiplier") -> float:
    """`multiplier` as a float, once it is a number in (0, `MAX_MULTIPLIER`]; `BadInput`
    naming `what` otherwise."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
        raise BadInput(f"{what} must be a number, not {multiplier!r}")
    if not (math.isfinite(multiplier) and 0 < multiplier <= MAX_MULTIPLIER):
        raise BadInput(
            f"{what} must be > 0 and at most {MAX_MULTIPLIER:g}, not {multiplier!r} (expand-"
            "pruning widens by 2, its uniform baseline by 1.1)"
        )
    return float(multiplier)


def scaled_width(base: int, widths: Widths, *names: str) -> int:
    """`base` channels times the multipliers of "*" and of `names` found in `widths`, rounded
    half up to an int; `BadInput` where that leaves no channel. The product is taken in
    decimal (each multiplier as written, e.g. 1.1 = 11/10), so 5 x 1.1 is exactly 5.5 -> 6
    whatever the float rounding."""
    exact = Fraction(base)
    used = {name: widths[name] for name in (EVERYWHERE, *names) if name in widths}
    for multiplier in used.values():
        exact *= Fraction(repr(multiplier))
    width = math.floor(exact + Fraction(1, 2))
    if width < 1:
        spec = " x ".join(f"{name}={m:g}" for name, m in used.items())
        raise BadInput(
            f"width spec {spec} makes a layer of {base} channels {float(exact):.3g} channels "
            f"wide, which rounds to none; choose multipliers whose product is at least "
            f"{0.5 / base:.3g} (half a channel)"
        )
    return width
