"""The model zoo: every network the suite prunes, created by name.

`create(name, num_classes, in_channels, image_size)` returns a freshly initialized
`nn.Module`. CIFAR-style models adapt to the input resolution (digits are 8x8, CIFAR 32x32);
ImageNet models come from torchvision and any timm model is reachable as ``timm/<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from sosp.errors import UnknownName

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its builder, fixed keyword arguments and a one-line summary."""

    builder: Builder
    kwargs: dict
    summary: str
    dataset: str  # the dataset it is built for by default (cifar10 or imagenet)


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder: Builder, summary: str, dataset: str = "cifar10", **kwargs) -> None:
    """Register `builder(num_classes=, in_channels=, image_size=, **kwargs)` under `name`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(builder, kwargs, summary, dataset)


def names() -> list[str]:
    """All registered model names (timm models are reachable as 'timm/<name>' on top)."""
    _load_builtin()
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registered spec of `name` (timm models get a generic ImageNet one)."""
    _load_builtin()
    if name.startswith("timm/"):
        return ModelSpec(timm_model_builder, {}, "timm model", "imagenet")
    if name not in _REGISTRY:
        raise UnknownName(
            f"unknown model {name!r}; known models: {', '.join(names())}, or 'timm/<name>' "
            "for any timm model (see `sosp models`)"
        )
    return _REGISTRY[name]


def create(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 32, **options
) -> nn.Module:
    """A freshly initialized model `name` for inputs [B, in_channels, image_size, image_size].

    `options` override the registered keyword arguments (e.g. ``shortcut="zeropad"`` for the
    CIFAR ResNets). Raises `KeyError` naming the known models for an unknown name.
    """
    found = spec(name)
    kwargs = {"name": name.removeprefix("timm/")} if name.startswith("timm/") else found.kwargs
    return found.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        **{**kwargs, **options},
    )


def timm_model_builder(
    name: str, num_classes: int, in_channels: int, image_size: int, **options
) -> nn.Module:
    from sosp.models.imagenet import timm_model

    return timm_model(name, num_classes, in_channels, **options)


def kaiming_init(model: nn.Module) -> None:
    """He-normal (fan_out, ReLU) initialization of every Conv2d, as the CIFAR models use."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


_loaded = False


def _load_builtin() -> None:
    """Import the model files once; each registers its architectures on import."""
    global _loaded
    if not _loaded:
        _loaded = True
        from sosp.models import (  # noqa: F401
            cifar_resnet,
            densenet,
            imagenet,
            mobilenet,
            vgg,
            wide_resnet,
        )
