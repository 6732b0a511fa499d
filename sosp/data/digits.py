"""scikit-learn's real 8x8 handwritten digits (1,797 images, shipped with the install), a fixed
stratified 80/20 train/test split (seed 0): the embedded default. The split is cached as an
.npz under the user's cache folder: importing scikit-learn costs each process about 1.7 s of
CPU, which the demo's short jobs would otherwise pay every time."""

from __future__ import annotations

import os
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from sosp.data.base import DatasetInfo, Source
from sosp.errors import SospError
from sosp.io import atomic_write

# pixel values 0..16 scaled to [0, 1]; mean/std of the training split
INFO = DatasetInfo("digits", 10, 1, 8, (0.3054,), (0.3761,), 1437, 360)
SPLIT_NAMES = ("x_train", "x_test", "y_train", "y_test")


def cache_file(seed: int, test_fraction: float) -> Path:
    """Where the split is cached: $XDG_CACHE_HOME (default ~/.cache)/sosp, one file per
    scikit-learn version, seed and test fraction."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = f"digits-sklearn{version('scikit-learn')}-seed{seed}-test{test_fraction}.npz"
    return home / "sosp" / name


def digits_split(seed: int = 0, test_fraction: float = 0.2):
    """(x_train, x_test, y_train, y_test): x in [0, 1] of shape [N, 1, 8, 8], y in 0..9; read
    from the cache where a readable one is there, else made by scikit-learn and cached (a cache
    that cannot be written is skipped)."""
    path = cache_file(seed, test_fraction)
    try:
        with np.load(path) as f:
            return tuple(f[k] for k in SPLIT_NAMES)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    split = made_split(seed, test_fraction)
    try:
        atomic_write(path, lambda f: np.savez(f, **dict(zip(SPLIT_NAMES, split, strict=True))))
    except (OSError, SospError):
        pass
    return split


def made_split(seed: int, test_fraction: float):
    """`digits_split` made by scikit-learn's own loader and stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    split = train_test_split(
        x, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    # copies in plain C order: the split's x has stride 1 on its channel axis of size 1, and a
    # conv given that layout rounds differently from the same values read back from the cache
    return tuple(a.copy(order="C") for a in split)


def digit_tensors(
    meta: DatasetInfo, train: bool, root: Path | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x_train, x_test, y_train, y_test = digits_split()
    x, y = (x_train, y_train) if train else (x_test, y_test)
    return torch.from_numpy(x), torch.from_numpy(y).long()


def digits_dataset(
    meta: DatasetInfo, train: bool, root: Path | None, augment: bool, download: bool
) -> Dataset:
    x, y = digit_tensors(meta, train, root, download)
    return TensorDataset((x - meta.mean[0]) / meta.std[0], y)


SOURCES = {"digits": Source(INFO, digits_dataset, digit_tensors)}
