"""ImageNet from an ImageFolder root with `train/` and `val/`: `<root>/imagenet` for an explicit
root, else `$SOSP_IMAGENET`, else `<data_root()>/imagenet`; it cannot be downloaded.

A folder the model cannot use stops with one line (`BadInput`) before anything runs: no class
folders, class folders without images, or a number of classes other than the 1000 the model's
head is built for. An unreadable image is found when it is read (checking every file up front
would read all 1.28 million); the error names its path."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sosp.data.base import DatasetInfo, Source, data_root
from sosp.errors import BadInput, DatasetNotFound

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
    meta: DatasetInfo, train: bool, root: Path | None, augment: bool, download: bool
) -> Dataset:
    if root is not None:  # an explicit --data-root wins over $SOSP_IMAGENET
        base = root / "imagenet"
    else:
        base = Path(os.environ.get("SOSP_IMAGENET") or data_root() / "imagenet")
    folder = base / ("train" if train else "val")
    if not folder.is_dir():
        raise DatasetNotFound(
            f"imagenet not found: expected an ImageFolder at {folder.resolve()} (one sub-folder "
            "per class). ImageNet cannot be downloaded automatically: get ILSVRC2012 from "
            "image-net.org, arrange train/ and val/ by class, and set SOSP_IMAGENET to the "
            "folder holding them."
        )
    from torchvision import datasets

    layout = f"expected {folder.resolve()}/<class>/<image>.JPEG, one sub-folder per class"
    if not any(entry.is_dir() for entry in folder.iterdir()):
        raise BadInput(f"{folder.resolve()} has no class folders: {layout} (see README, Data)")
    ds = datasets.ImageFolder(
        str(folder),
        transform=imagenet_transform(meta, augment),
        loader=read_image,
        allow_empty=True,
    )
    counts = torch.bincount(torch.tensor(ds.targets, dtype=torch.long), minlength=len(ds.classes))
    empty = [name for name, n in zip(ds.classes, counts.tolist(), strict=True) if n == 0]
    if empty:
        shown = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
        raise BadInput(
            f"{len(empty)} of the {len(ds.classes)} class folders in {folder.resolve()} hold no "
            f"images ({shown}): {layout}; put the images in them or remove them"
        )
    if len(ds.classes) != meta.num_classes:
        raise BadInput(
            f"{folder.resolve()} has {len(ds.classes)} class folders but {meta.name} has "
            f"{meta.num_classes} classes (the model's output layer has {meta.num_classes}): "
            f"give it all {meta.num_classes} class folders"
        )
    return ds


def read_image(path: str):
    """The RGB image at `path` (torchvision's PIL loader); `BadInput` naming the file where it
    is not a readable image. Module-level, so that DataLoader workers can pickle it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise BadInput(
            f"{path} is not a readable image ({reason}): replace it with a good copy or delete it"
        ) from None


SOURCES = {"imagenet": Source(INFO, imagenet_dataset)}
