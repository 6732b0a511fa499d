"""Seeded standard-normal images with uniform labels, for timing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from sosp.data.base import DatasetInfo, Source

INFO = DatasetInfo("synthetic", 10, 3, 32, (0.0,) * 3, (1.0,) * 3, 1024, 256)


def synthetic(
    num_samples: int, shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> TensorDataset:
    """`num_samples` standard-normal images of `shape` with uniform labels, seeded."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_samples, *shape, generator=g)
    return TensorDataset(x, torch.randint(num_classes, (num_samples,), generator=g))


def synthetic_dataset(
    meta: DatasetInfo, train: bool, root: Path | None, augment: bool, download: bool
) -> Dataset:
    n = meta.train_size if train else meta.test_size
    return synthetic(n, meta.input_shape, meta.num_classes, seed=0 if train else 1)


def synthetic_tensors(
    meta: DatasetInfo, train: bool, root: Path | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = synthetic_dataset(meta, train, root, False, download).tensors
    return (x - x.min()) / (x.max() - x.min()), y


SOURCES = {"synthetic": Source(INFO, synthetic_dataset, synthetic_tensors)}
