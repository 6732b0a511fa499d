"""ImageNet models: torchvision's ResNets (randomly initialized; load weights from a checkpoint)
and any timm model by name. Nothing here downloads weights."""

from __future__ import annotations

from functools import partial

from torch import nn

from sosp.errors import UnknownName
from sosp.models.base import ModelSpec, PublishedWeights


def torchvision_resnet(
    arch: str, num_classes: int, in_channels: int = 3, image_size: int = 224
) -> nn.Module:
    import torchvision  # imported on use: it costs seconds at every `sosp` start

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(
            in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
        )
    return model


def timm_model(name: str, num_classes: int, in_channels: int = 3, **options) -> nn.Module:
    """`timm.create_model(name)` without pretrained weights; a clear error for unknown names."""
    import timm

    if name not in timm.list_models():
        raise UnknownName(f"unknown timm model {name!r}; see timm.list_models() for the names")
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options
    )


def timm_builder(
    name: str, num_classes: int, in_channels: int, image_size: int, **options
) -> nn.Module:
    """`timm_model` with the zoo's builder signature (timm models ignore `image_size`)."""
    return timm_model(name, num_classes, in_channels, **options)


def torchvision_weights(arch: str) -> PublishedWeights:
    """torchvision's IMAGENET1K_V1 weights of `arch` (the SOSP paper's baselines: ResNet-18
    69.76%, ResNet-50 76.15% top-1), as torchvision records them."""
    import torchvision
    from torch.hub import HASH_REGEX

    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    digest = HASH_REGEX.search(weights.url.rsplit("/", 1)[-1])
    top1 = weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    return PublishedWeights(weights.url, digest.group(1), top1)


MODELS = {
    arch: ModelSpec(
        torchvision_resnet,
        f"torchvision {arch} (ImageNet)",
        "imagenet",
        {"arch": arch},
        weights=partial(torchvision_weights, arch),
    )
    for arch in ("resnet18", "resnet34", "resnet50")
}
