"""Datasets by name (see `sosp.data.registry`): `info`, `load`, `tensors`, `files`, and the helpers
tests and benchmarks use."""

from sosp.data.base import DatasetInfo, data_root
from sosp.data.cifar import CIFAR_MEAN, CIFAR_STD, write_fake_cifar10
from sosp.data.digits import digits_split
from sosp.data.imagenet import write_jpeg_folder
from sosp.data.registry import files, has_files, info, load, names, tensors
from sosp.data.synthetic import synthetic

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DatasetInfo",
    "data_root",
    "digits_split",
    "files",
    "has_files",
    "info",
    "load",
    "names",
    "synthetic",
    "tensors",
    "write_fake_cifar10",
    "write_jpeg_folder",
]
