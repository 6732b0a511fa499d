"""The model zoo: every network the suite prunes, created by name.

`create(name, num_classes, in_channels, image_size)` returns a freshly initialized
`nn.Module`. CIFAR-style models adapt to the input resolution (digits are 8x8, CIFAR 32x32);
ImageNet models come from torchvision and any timm model is reachable as ``timm/<name>``.
Each model module lists its `MODELS`; this file joins them.
"""

from __future__ import annotations

import inspect

from torch import nn

from sosp.errors import BadInput, UnknownName
from sosp.models import cifar_resnet, densenet, imagenet, mobilenet, vgg, vit, wide_resnet
from sosp.models.base import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}
TIMM_SPEC = ModelSpec(imagenet.timm_builder, "timm model", "imagenet")


def register(name: str, spec: ModelSpec) -> None:
    """Make `spec` available as `create(name, ...)`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = spec


for _module in (cifar_resnet, densenet, imagenet, mobilenet, vgg, vit, wide_resnet):
    for _name, _spec in _module.MODELS.items():
        register(_name, _spec)


def names() -> list[str]:
    """All registered model names (timm models are reachable as 'timm/<name>' on top)."""
    return sorted(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The registered spec of `name` (timm models get a generic ImageNet one)."""
    if name.startswith("timm/"):
        return TIMM_SPEC
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
    CIFAR ResNets; ``widths={"layer2": 2.0}`` widens a CIFAR ResNet or VGG, see `base.Widths`).
    Raises `UnknownName` naming the known models for an unknown name.
    """
    found = spec(name)
    kwargs = {"name": name.removeprefix("timm/")} if name.startswith("timm/") else found.kwargs
    return found.builder(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        **{**kwargs, **options},
    )


def create_widened(name: str, meta, widths: dict[str, float] | None = None) -> nn.Module:
    """`create(name)` for dataset facts `meta` (a `sosp.data.DatasetInfo`), widened by the width
    spec `widths` (None or empty: as registered); `BadInput` for a model without widths."""
    if not widths:
        return create(name, meta.num_classes, meta.in_channels, meta.image_size)
    if "widths" not in inspect.signature(spec(name).builder).parameters:
        raise BadInput(
            f"{name} cannot be widened (--widths / widths): width specs exist for the CIFAR "
            "ResNets and VGGs"
        )
    return create(name, meta.num_classes, meta.in_channels, meta.image_size, widths=widths)
