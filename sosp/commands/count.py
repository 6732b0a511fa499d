"""`sosp count`: parameters and MACs of an architecture, pruned by a mask file or not."""

from __future__ import annotations

import argparse
import json

from sosp import counting, paths
from sosp.api import apply_mask
from sosp.commands.base import (
    Command,
    add_dataset,
    add_device,
    add_model,
    model_for,
    resolve_device,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p, "; with --mask, the mask's")
    p.add_argument("--mask", help=f"{paths.MASK} from `sosp prune`: count the pruned architecture")
    p.add_argument("--json", action="store_true", help='print {"params": ..., "macs": ...}')
    add_device(p)


def run(args: argparse.Namespace) -> int:
    doc = paths.read_mask_file(args.mask) if args.mask else None
    # without --dataset a mask is counted on the dataset it was computed on
    model, meta = model_for(args.model, args.dataset or (doc or {}).get("dataset"))
    model = model.to(resolve_device(args.device))
    if doc is not None:
        paths.check_mask_fits(doc, args.mask, args.model, meta)
        model = apply_mask(model, doc["mask"], meta.input_shape, doc.get("exclude"))
    c = counting.count(model, meta.input_shape)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        print(f"{args.model} on {meta.name}: {c.params:,} params, {c.macs:,} MACs per image")
    return 0


COMMAND = Command(add_arguments, run)
