"""CIFAR-10/100 through torchvision's readers over the pickled batches in
`<root>/cifar-10-batches-py` (`cifar-100-python`). Augmentation: random crop (padding 4) and
horizontal flip. Nothing is downloaded unless asked.

torchvision is imported where it is used: it costs seconds at every `sosp` start, and the
digits path never needs it.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sosp.data.base import DatasetInfo, Source, data_root
from sosp.errors import BadInput, DatasetNotFound

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
INFOS = {
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, CIFAR_MEAN, CIFAR_STD, 50000, 10000),
    "cifar100": DatasetInfo("cifar100", 100, 3, 32, CIFAR_MEAN, CIFAR_STD, 50000, 10000),
}


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


def cifar_dataset(
    meta: DatasetInfo, train: bool, root: Path | None, augment: bool, download: bool
) -> Dataset:
    root = data_root(root)
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
    names = [name for name, _ in (cls.train_list if train else cls.test_list)]
    missing = [name for name in [*names, cls.meta["filename"]] if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFound(
            f"{meta.name} is incomplete: {folder.resolve()} lacks {', '.join(missing)} of the "
            f"python batches of {cls.url}. Extract the whole archive there, or add --download "
            "where the network allows."
        )
    try:
        return cls(str(root), train=train, transform=cifar_transform(meta, augment))
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
        raise BadInput(
            f"{meta.name}: a batch in {folder.resolve()} is not a CIFAR python batch "
            f"({type(e).__name__}: {' '.join(str(e).split())}): extract it again from {cls.url}"
        ) from None


def cifar_tensors(
    meta: DatasetInfo, train: bool, root: Path | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    ds = cifar_dataset(meta, train, root, False, download)
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)


SOURCES = {name: Source(info, cifar_dataset, cifar_tensors) for name, info in INFOS.items()}
