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
    parse_widths,
    resolve_device,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p, "; with --mask, the mask's")
    p.add_argument("--mask", help=f"{paths.MASK} from `sosp prune`: count the pruned architecture")
    p.add_argument(
        "--convention",
        choices=sorted(counting.CONVENTIONS),
        default="actual",
        help="how MACs are counted: actual (the pruned network as it runs, the paper's count; "
        "default) or ccp (the paper's 'alternative MAC count' of Table 2 for comparing with "
        "CCP, reconstructed: skip connections ignored, so a filter pruned from a layer that "
        "writes a residual stream also removes the next layer's input channel; see "
        "sosp.counting.ccp_macs). Without --mask both give the dense count",
    )
    p.add_argument("--json", action="store_true", help='print {"params": ..., "macs": ...}')
    add_device(p)


def run(args: argparse.Namespace) -> int:
    doc = paths.read_mask_file(args.mask) if args.mask else None
    # without --dataset a mask is counted on the dataset it was computed on
    widths = parse_widths(args.widths) or (doc or {}).get("widths")  # a mask's own widths
    dense, meta = model_for(args.model, args.dataset or (doc or {}).get("dataset"), widths)
    dense = model = dense.to(resolve_device(args.device))
    if doc is not None:
        paths.check_mask_fits(doc, args.mask, args.model, meta)
        model = apply_mask(dense, doc["mask"], meta.input_shape, doc.get("exclude"))
    macs = counting.CONVENTIONS[args.convention](dense, model, meta.input_shape)
    c = counting.Counts(params=counting.count_params(model), macs=macs)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        how = "" if args.convention == "actual" else f" ({args.convention} convention)"
        print(f"{args.model} on {meta.name}: {c.params:,} params, {c.macs:,} MACs per image{how}")
    return 0


COMMAND = Command(add_arguments, run)
