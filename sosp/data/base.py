"""What every dataset plug-in provides: the facts a model needs (`DatasetInfo`) and readers of
its splits (`Source`). Plug-ins import only this module."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset


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


# dataset(meta, train, root, augment, download) -> torch Dataset of normalized (image, label);
# root is the caller's (None: the reader's default, data_root() or the dataset's own variable)
DatasetReader = Callable[[DatasetInfo, bool, Path | None, bool, bool], Dataset]
# tensors(meta, train, root, download) -> (x [N, C, H, W] uint8 or float in [0, 1], y [N] long)
TensorReader = Callable[[DatasetInfo, bool, Path | None, bool], tuple[torch.Tensor, torch.Tensor]]
# files(meta, train, root) -> torch Dataset of (encoded image bytes [n] uint8, label)
FilesReader = Callable[[DatasetInfo, bool, Path | None], Dataset]


@dataclass(frozen=True)
class Source:
    """A registered dataset: its facts, its Dataset reader, and (for sets small enough to hold
    on the device) a reader of the raw tensors, or (for image files) a reader of their bytes."""

    info: DatasetInfo
    dataset: DatasetReader
    tensors: TensorReader | None = None
    files: FilesReader | None = None


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else $SOSP_DATA, else ./data."""
    return Path(root or os.environ.get("SOSP_DATA") or "data")
