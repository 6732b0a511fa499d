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
from sosp.commands.base import (
    Command,
    add_dataset,
    add_model,
    check_out_folder,
    model_for,
    parse_widths,
)
from sosp.errors import BadInput
from sosp.models.base import PublishedWeights

CHUNK = 1 << 20  # bytes read at a time while hashing
MIN_SHA256_DIGITS = 8  # as many as torch.hub puts in a file name: fewer would match by chance
HEX_DIGITS = "0123456789abcdef"


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


def published(model: str) -> PublishedWeights | None:
    """The weights published for `model` that sosp knows (torchvision's, for the zoo's
    ResNets), else None. Reading torchvision's record imports torchvision (seconds)."""
    found = models.spec(model).weights
    return found() if found is not None else None


def expected_sha256(model: str, given: str | None) -> str:
    """The hex digits the file's sha256 must start with: `given`, else those of the weights
    published for `model`."""
    if given is not None:
        return checked_sha256(given)
    weights = published(model)
    if weights is None:
        raise BadInput(
            f"{model} has no published weights sosp knows the sha256 of: pass --sha256 with the "
            "checksum its publisher gives"
        )
    return weights.sha256_prefix


def checked_sha256(given: str) -> str:
    """`given` in lower case, once it is 8 to 64 hex digits (a sha256 or its start)."""
    digits = given.strip().lower()
    if not (MIN_SHA256_DIGITS <= len(digits) <= 64 and set(digits) <= set(HEX_DIGITS)):
        raise BadInput(
            f"--sha256 {given!r} is not a sha256: pass its first {MIN_SHA256_DIGITS} to 64 hex "
            "digits (0-9, a-f), e.g. 0676ba61 from the file name resnet50-0676ba61.pth"
        )
    return digits


def check_sha256(path: str | Path, expected: str, model: str) -> str:
    """The file's sha256, after checking that it starts with `expected`; the refusal says where
    `model`'s published weights are downloaded."""
    if not Path(path).is_file():
        raise BadInput(f"weights file {path} does not exist; download it from {_where(model)}")
    actual = sha256_of(path)
    if not actual.startswith(expected):
        raise BadInput(
            f"{path} has sha256 {actual}, not the published {expected}...: it is another or a "
            f"damaged file; download it again from {_where(model)}"
        )
    return actual


def _where(model: str) -> str:
    weights = published(model)
    return weights.url if weights is not None else "where you downloaded it"


def run(args: argparse.Namespace) -> int:
    digest = check_sha256(args.weights, expected_sha256(args.model, args.sha256), args.model)
    check_out_folder(args.out)
    widths = parse_widths(args.widths)
    net, meta = model_for(args.model, args.dataset, widths)
    paths.load_weights(net, args.weights, args.model)
    paths.check_finite_weights(net, f"{args.weights}")
    architecture = {
        "model": args.model,
        "dataset": meta.name,
        "weights": {"file": str(Path(args.weights).resolve()), "sha256": digest},
        **({"widths": widths} if widths else {}),
    }
    out = paths.model(args.out)
    paths.save_model(out, net, architecture)
    print(f"{args.weights} (sha256 {digest[:12]}...) checked and written as {out}")
    return 0


COMMAND = Command(add_arguments, run)
