"""What every model plug-in provides: `ModelSpec`s of its architectures (builder, keyword
arguments, a one-line summary, the dataset it is built for). Model modules import only this
module; `sosp.models.registry` joins their `MODELS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

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
