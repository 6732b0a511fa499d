"""Datasets by name: what the model needs to know (`info`) and the data itself (`load`).

- digits:    scikit-learn's real 8x8 handwritten digits (1,797 images, shipped with the install),
             a fixed stratified 80/20 train/test split (seed 0). The embedded default.
- cifar10/100: torchvision's CIFAR classes over the pickled batches in `<root>/cifar-10-batches-py`
             (`cifar-100-python`). Augmentation: random crop (padding 4) + horizontal flip.
- imagenet:  an ImageFolder root with `train/` and `val/` (`--data-root` or $SOSP_IMAGENET).
- synthetic: seeded random tensors of a given shape, for timing.

`root` defaults to $SOSP_DATA, else ./data. Nothing is downloaded unless `download=True`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from sosp.errors import BadInput, DatasetNotFound, UnknownName


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: what a model built for it must accept and emit."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# digits: pixel values 0..16 scaled to [0, 1]; mean/std of the training split.
DIGITS_MEAN, DIGITS_STD = (0.3054,), (0.3761,)

INFOS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 1, 8, DIGITS_MEAN, DIGITS_STD, 1437, 360),
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, CIFAR_MEAN, CIFAR_STD, 50000, 10000),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, CIFAR_MEAN, CIFAR_STD, 50000, 10000),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, 1281167, 50000),
    "synthetic": DatasetInfo("synthetic", 10, 3, 32, (0.0,) * 3, (1.0,) * 3, 1024, 256),
}


def info(name: str) -> DatasetInfo:
    """Facts about dataset `name`; `KeyError` naming the known datasets otherwise."""
    if name not in INFOS:
        raise UnknownName(f"unknown dataset {name!r}; known datasets: {', '.join(INFOS)}")
    return INFOS[name]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else $SOSP_DATA, else ./data."""
    return Path(root or os.environ.get("SOSP_DATA") or "data")


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
    if split not in ("train", "test"):
        raise BadInput(f"split must be 'train' or 'test', not {split!r}")
    meta = info(name)
    train = split == "train"
    augment = train if augment is None else (augment and train)
    return _LOADERS[name](meta, train, data_root(root), augment, download)


def tensors(
    name: str, split: str, root: str | os.PathLike | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole `split` of `name` as raw tensors (x [N, C, H, W] uint8 or float in [0, 1],
    y [N] long), for the device-resident loader; normalization is left to the caller."""
    meta = info(name)
    if name == "digits":
        x_train, x_test, y_train, y_test = digits_split()
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        return torch.from_numpy(x), torch.from_numpy(y).long()
    if name in CIFARS:
        ds = load(name, split, root, augment=False, download=download)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
    if name == "synthetic":
        ds = load(name, split)
        x = ds.tensors[0]
        return (x - x.min()) / (x.max() - x.min()), ds.tensors[1]
    raise BadInput(f"{meta.name} has no tensor form (it is read from files); use the DataLoader")


# --------------------------------------------------------------------------------------------
# digits


def digits_split(seed: int = 0, test_fraction: float = 0.2):
    """(x_train, x_test, y_train, y_test): x in [0, 1] of shape [N, 1, 8, 8], y in 0..9."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    return tuple(
        train_test_split(
            x, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
        )
    )


def _digits(meta: DatasetInfo, train: bool, root: Path, augment: bool, download: bool) -> Dataset:
    x_train, x_test, y_train, y_test = digits_split()
    x, y = (x_train, y_train) if train else (x_test, y_test)
    x = (torch.from_numpy(x) - meta.mean[0]) / meta.std[0]
    return TensorDataset(x, torch.from_numpy(y).long())


# --------------------------------------------------------------------------------------------
# CIFAR


# torchvision is imported where it is used: it costs seconds at every `sosp` start, and the
# digits path never needs it.


def cifar_transform(meta: DatasetInfo, augment: bool):
    from torchvision.transforms import v2

    steps: list = [v2.ToImage()]
    if augment:
        steps += [v2.RandomCrop(meta.image_size, padding=4), v2.RandomHorizontalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(meta.mean, meta.std)]
    return v2.Compose(steps)


def _present_files_only(cls: type) -> type:
    """torchvision's CIFAR class with its MD5 sums removed, so that its integrity check asks
    only that every file exists (the full archive's sums would reject any subset of the data);
    reading the pickled batches stays torchvision's own code."""
    unsummed = {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    }
    return type(cls.__name__, (cls,), unsummed)


CIFARS = ("cifar10", "cifar100")


def _torchvision_cifar(name: str) -> type:
    from torchvision import datasets

    return {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]


@functools.cache
def _cifar_class(name: str) -> type:
    return _present_files_only(_torchvision_cifar(name))


def write_fake_cifar10(root: str | os.PathLike, per_batch: int = 4, seed: int = 0) -> Path:
    """Random CIFAR-10 in the real on-disk format under `root` (for tests and benchmarks on
    machines without the data): protocol-2 pickled dicts of uint8 rows of 3072 bytes (R, G, B
    planes) and integer labels, five training batches and one test batch of `per_batch` each."""
    import pickle

    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    return folder


def _cifar(meta: DatasetInfo, train: bool, root: Path, augment: bool, download: bool) -> Dataset:
    cls = _cifar_class(meta.name)
    folder = root / cls.base_folder
    if download:  # torchvision fetches the archive and verifies its MD5 sums
        _torchvision_cifar(meta.name)(str(root), train=train, download=True)
    if not folder.is_dir():
        raise DatasetNotFound(
            f"{meta.name} not found: expected the folder {folder.resolve()} with the python "
            f"batches of {cls.url}. Download and extract it there, pass --data-root DIR (or set "
            f"SOSP_DATA) to where it is, or add --download where the network allows."
        )
    return cls(str(root), train=train, transform=cifar_transform(meta, augment))


# --------------------------------------------------------------------------------------------
# ImageNet


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


def _imagenet(meta: DatasetInfo, train: bool, root: Path, augment: bool, download: bool) -> Dataset:
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


# --------------------------------------------------------------------------------------------
# synthetic


def synthetic(
    num_samples: int, shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> TensorDataset:
    """`num_samples` standard-normal images of `shape` with uniform labels, seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, *shape, generator=g)
    return TensorDataset(x, torch.randint(num_classes, (num_samples,), generator=g))


def _synthetic(
    meta: DatasetInfo, train: bool, root: Path, augment: bool, download: bool
) -> Dataset:
    n = meta.train_size if train else meta.test_size
    return synthetic(n, meta.input_shape, meta.num_classes, seed=0 if train else 1)


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagenet": _imagenet,
    "synthetic": _synthetic,
}
