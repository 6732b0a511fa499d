"""What every `sosp` command is made of, and the arguments several commands share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sosp import data, models
from sosp.errors import BadInput


@dataclass(frozen=True)
class Command:
    """One `sosp` subcommand: `add_arguments(parser)` declares its options; `run(args)` does
    the work and returns the exit code. Errors for the user are raised as `SospError`."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def parse_options(items: list[str], flag: str = "--option") -> dict:
    """KEY=VALUE strings to a dict, values read as JSON where they parse (true, 3, 0.5)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(f"{flag} takes KEY=VALUE, not {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# -- shared arguments -------------------------------------------------------------------------


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `sosp models`) or timm/<name>")


def add_dataset(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--dataset", help=f"dataset (default: the model's own){more}")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if present)")


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the datasets (default $SOSP_DATA or ./data)")


def add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("--download", action="store_true", help="download CIFAR if it is missing")


# -- shared steps -----------------------------------------------------------------------------


def model_for(model: str, dataset: str | None) -> tuple[nn.Module, data.DatasetInfo]:
    """(a fresh `model` from the zoo, the dataset's info) for `dataset` (None: the model's
    own)."""
    meta = data.info(dataset or models.spec(model).dataset)
    return models.create(model, meta.num_classes, meta.in_channels, meta.image_size), meta


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' where a GPU is present, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
