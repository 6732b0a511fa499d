"""`sosp import`: published pretrained weights, downloaded by the user, as a sosp model file, so
that `sosp prune --checkpoint`, `sosp evaluate` and the workflow treat them as a trained dense
network. Nothing is downloaded: the file is checked by its sha256 against the one the library
that published it records (torchvision's IMAGENET1K_V1 for the zoo's ResNets), or against
`--sha256` for any other weights.

sosp import --model resnet50 --weights resnet50-0676ba61.pth --out runs/dense/resnet50
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from sosp import models, paths
from sosp.commands.base import Command, add_dataset, add_model, check_out_folder, model_for
from sosp.errors import BadInput

CHUNK = 1 << 20  # bytes read at a time while hashing


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p)
    p.add_argument(
        "--weights",
        required=True,
        help="the downloaded weights file (a state dict), e.g. torchvision's "
        "resnet50-0676ba61.pth from https://download.pytorch.org/models/ (`sosp import "
        "--model resnet50 --weights x --out y` with a wrong file prints the address)",
    )
    p.add_argument(
        "--sha256",
        help="the file's sha256 (or its first 8 or more hex digits); default: the published "
        "one of --model's weights; needed for models without published weights",
    )
    p.add_argument("--out", required=True, help=f"run folder: {paths.MODEL} goes there")


def sha256_of(path: str | Path) -> str:
    """The sha256 of the file at `path`, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(model: str, given: str | None) -> tuple[str, str]:
    """(the hex digits the file's sha256 must start with, where to get the file) for `model`:
    `given`, else the published weights' own."""
    found = models.spec(model).weights
    published = found() if found is not None else None
    where = published.url if published else "where you downloaded it"
    if given:
        return given.lower(), where
    if published is None:
        raise BadInput(
            f"{model} has no published weights sosp knows the sha256 of: pass --sha256 with the "
            "checksum its publisher gives"
        )
    return published.sha256_prefix, where


def check_sha256(path: str | Path, expected: str, where: str) -> str:
    """The file's sha256, after checking that it starts with `expected`."""
    if not Path(path).is_file():
        raise BadInput(f"weights file {path} does not exist; download it from {where}")
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise BadInput(
            f"{path} has sha256 {actual}, not the published {expected}...: it is another or a "
            f"damaged file; download it again from {where}"
        )
    return actual


def run(args: argparse.Namespace) -> int:
    expected, where = expected_sha256(args.model, args.sha256)
    digest = check_sha256(args.weights, expected, where)
    check_out_folder(args.out)
    net, meta = model_for(args.model, args.dataset)
    paths.load_weights(net, args.weights, args.model)
    paths.check_finite_weights(net, f"{args.weights}")
    architecture = {
        "model": args.model,
        "dataset": meta.name,
        "weights": {"file": str(Path(args.weights).resolve()), "sha256": digest},
    }
    out = paths.model(args.out)
    paths.save_model(out, net, architecture)
    print(f"{args.weights} (sha256 {digest[:12]}...) checked and written as {out}")
    return 0


COMMAND = Command(add_arguments, run)
