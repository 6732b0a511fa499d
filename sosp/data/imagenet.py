"""ImageNet from an ImageFolder root with `train/` and `val/` (`$SOSP_IMAGENET`, else
`<root>/imagenet`); it cannot be downloaded automatically."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sosp.data.base import DatasetInfo, Source
from sosp.errors import DatasetNotFound

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INFO = DatasetInfo("imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, 1281167, 50000)


def imagenet_transform(meta: DatasetInfo, augment: bool):
    from torchvision.transforms import v2

    if augment:
        steps = [v2.RandomResizedCrop(meta.image_size), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(256), v2.CenterCrop(meta.image_size)]
    return v2.Compose(
        [
            v2.ToImage(),
            *steps,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(meta.mean, meta.std),
        ]
    )


def imagenet_dataset(
    meta: DatasetInfo, train: bool, root: Path, augment: bool, download: bool
) -> Dataset:
    base = Path(os.environ.get("SOSP_IMAGENET") or root / "imagenet")
    folder = base / ("train" if train else "val")
    if not folder.is_dir():
        raise DatasetNotFound(
            f"imagenet not found: expected an ImageFolder at {folder.resolve()} (one sub-folder "
            "per class). ImageNet cannot be downloaded automatically: get ILSVRC2012 from "
            "image-net.org, arrange train/ and val/ by class, and set SOSP_IMAGENET to the "
            "folder holding them."
        )
    from torchvision import datasets

    return datasets.ImageFolder(str(folder), transform=imagenet_transform(meta, augment))


SOURCES = {"imagenet": Source(INFO, imagenet_dataset)}
