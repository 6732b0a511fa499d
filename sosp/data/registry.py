"""Datasets by name: what a model needs to know (`info`) and the data itself (`load`,
`tensors`). Each plug-in module lists its `SOURCES`; this file joins them.

- digits:      scikit-learn's 8x8 digits, shipped with the install (the embedded default).
- cifar10/100: torchvision's CIFAR readers over `<root>/cifar-10-batches-py` (`cifar-100-python`).
- imagenet:    an ImageFolder root with `train/` and `val/` (`$SOSP_IMAGENET`).
- imagenette:  fast.ai's 10-class subset of ImageNet, the same layout (`$SOSP_IMAGENETTE`).
- synthetic:   seeded random tensors, for timing.

`root` defaults to $SOSP_DATA, else ./data. Nothing is downloaded unless `download=True`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sosp.data import cifar, digits, imagenet, synthetic
from sosp.data.base import DatasetInfo, Source
from sosp.errors import BadInput, UnknownName

SOURCES: dict[str, Source] = {
    **digits.SOURCES,
    **cifar.SOURCES,
    **imagenet.SOURCES,
    **synthetic.SOURCES,
}
SPLITS = ("train", "test")


def names() -> list[str]:
    return list(SOURCES)


def source(name: str) -> Source:
    """The registered dataset `name`; `UnknownName` naming the known datasets otherwise."""
    if name not in SOURCES:
        raise UnknownName(f"unknown dataset {name!r}; known datasets: {', '.join(SOURCES)}")
    return SOURCES[name]


def info(name: str) -> DatasetInfo:
    """Facts about dataset `name`."""
    return source(name).info


def _given(root: str | os.PathLike | None) -> Path | None:
    """The root as the caller gave it (None: the reader's defaults, `data_root()` or a
    dataset's own variable such as $SOSP_IMAGENET, which an explicit root overrides)."""
    return None if root is None else Path(root)


def _is_train(split: str) -> bool:
    if split not in SPLITS:
        raise BadInput(f"split must be 'train' or 'test', not {split!r}")
    return split == "train"


def load(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    augment: bool | None = None,
    download: bool = False,
) -> Dataset:
    """The `split` ('train' or 'test') of dataset `name` as a torch Dataset of (image, label).

    Images are normalized float tensors [C, H, W]. `augment` defaults to True for the train
    split of datasets that have augmentation (CIFAR, ImageNet) and is always off for test.
    """
    train = _is_train(split)
    found = source(name)
    augment = train if augment is None else (augment and train)
    return found.dataset(found.info, train, _given(root), augment, download)


def tensors(
    name: str, split: str, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole `split` of `name` as raw tensors (x [N, C, H, W] uint8 or float in [0, 1],
    y [N] long), for the device-resident loader; normalization is left to the caller."""
    train = _is_train(split)
    found = source(name)
    if found.tensors is None:
        raise BadInput(f"{name} has no tensor form (it is read from files); use the DataLoader")
    return found.tensors(found.info, train, _given(root), download)


def files(name: str, split: str, root: str | os.PathLike | None = None) -> Dataset:
    """The `split` of an image-file dataset as (encoded bytes [n] uint8, label) pairs, for
    `sosp.jpeg_loader` to decode on the device."""
    train = _is_train(split)
    found = source(name)
    if found.files is None:
        raise BadInput(f"{name} is not read from image files; use the tensor or torch loader")
    return found.files(found.info, train, _given(root))


def has_files(name: str) -> bool:
    """Whether dataset `name` is read from image files (ImageNet and the like)."""
    return source(name).files is not None
