"""ImageNet and Imagenette (fast.ai's 10-class ImageNet subset) from an ImageFolder root with
`train/` and `val/`: `<root>/<name>` for an explicit root, else `$SOSP_IMAGENET`
(`$SOSP_IMAGENETTE`), else `<data_root()>/<name>`; neither is downloaded.

Two readers of the same checked folder: `imagenet_dataset` (PIL and torchvision transforms,
the reference path) and `imagenet_files` (the raw file bytes, which `sosp.jpeg_loader` decodes
in batches on the device).

A folder the model cannot use stops with one line (`BadInput`) before anything runs: no class
folders, class folders without images, or a number of classes other than the one the model's
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
IMAGENETTE = DatasetInfo("imagenette", 10, 3, 224, IMAGENET_MEAN, IMAGENET_STD, 9469, 3925)
GET_IT = {
    "imagenet": "get ILSVRC2012 from image-net.org and arrange train/ and val/ by class",
    "imagenette": "unpack https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz (its "
    "imagenette2/ holds train/ and val/ by class)",
}


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
    """The checked folder's images as normalized tensors [3, 224, 224] (see
    `imagenet_transform`), read with PIL."""
    return image_folder(meta, train, root, imagenet_transform(meta, augment), read_image)


def imagenet_files(meta: DatasetInfo, train: bool, root: Path | None) -> Dataset:
    """The checked folder's files as (encoded bytes [n] uint8, label): what the device decodes."""
    return image_folder(meta, train, root, None, read_bytes)


def image_folder(meta: DatasetInfo, train: bool, root: Path | None, transform, loader) -> Dataset:
    """torchvision's ImageFolder over `meta`'s train or val folder, after the checks the module
    docstring names."""
    variable = f"SOSP_{meta.name.upper()}"
    if root is not None:  # an explicit --data-root wins over the dataset's variable
        base = root / meta.name
    else:
        base = Path(os.environ.get(variable) or data_root() / meta.name)
    folder = base / ("train" if train else "val")
    if not folder.is_dir():
        raise DatasetNotFound(
            f"{meta.name} not found: expected an ImageFolder at {folder.resolve()} (one "
            f"sub-folder per class). {meta.name} is not downloaded automatically: "
            f"{GET_IT[meta.name]}, and set {variable} to the folder holding them."
        )
    from torchvision import datasets

    layout = f"expected {folder.resolve()}/<class>/<image>.JPEG, one sub-folder per class"
    if not any(entry.is_dir() for entry in folder.iterdir()):
        raise BadInput(
            f"{folder.resolve()} has no class folders: {layout} (see docs/guide/models-data.md)"
        )
    ds = datasets.ImageFolder(str(folder), transform=transform, loader=loader, allow_empty=True)
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


def read_bytes(path: str) -> torch.Tensor:
    """The file at `path` as a 1-D uint8 tensor (torchvision.io.read_file). Module-level, so
    that DataLoader workers can pickle it."""
    from torchvision.io import read_file

    return read_file(path)


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


SOURCES = {
    meta.name: Source(meta, imagenet_dataset, files=imagenet_files) for meta in (INFO, IMAGENETTE)
}


def write_jpeg_folder(
    root: str | os.PathLike,
    name: str = "imagenette",
    classes: int = 10,
    per_class: tuple[int, int] = (4, 2),
    sizes: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> Path:
    """Write `<root>/<name>/{train,val}/<wnid>/*.JPEG`: real JPEGs (quality 90) of seeded smooth
    colour fields with noise, `per_class` (train, val) per class, each side drawn from `sizes`
    (px, inclusive). For tests and benchmarks; returns `<root>/<name>`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / name
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c in range(classes):
            folder = base / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(sizes[0], sizes[1] + 1, size=2)
                ramp = (
                    np.linspace(0, 1, int(w))[None, :, None]
                    * np.linspace(0, 1, int(h))[:, None, None]
                )
                colour = rng.uniform(0, 255, size=3)
                pixels = ramp * colour + rng.normal(0, 20, size=(int(h), int(w), 3)) + 40 * (c % 3)
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / f"{split}_{c}_{i}.JPEG", format="JPEG", quality=90)
    return base
