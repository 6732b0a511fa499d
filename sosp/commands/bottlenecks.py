"""`sosp bottlenecks`: the architectural bottlenecks that pruning masks reveal (SOSP Sec. 3.4,
expand-pruning), as the width spec that widens them; `sosp train --widths FILE` trains the
expanded network.

sosp bottlenecks --mask runs/p-s0/0.5/mask.json runs/p-s1/0.5/mask.json --out widths.json
"""

from __future__ import annotations

import argparse
import json

from sosp import bottlenecks, paths
from sosp.commands.base import Command, check_out_file, model_for
from sosp.io import atomic_write_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mask",
        nargs="+",
        required=True,
        help=f"{paths.MASK} files of one dense network (e.g. one per seed): ratios are averaged",
    )
    p.add_argument(
        "--level",
        help="stage, block or layer (a CIFAR ResNet), layer (a VGG); default: the paper's, "
        "stage for ResNets (the least pruned of the three), layer for VGGs (the five least)",
    )
    p.add_argument("--count", type=int, help="widen the COUNT least pruned units of the level")
    p.add_argument(
        "--threshold",
        type=float,
        help="widen only units pruned less than THRESHOLD x the level's mean ratio",
    )
    p.add_argument("--multiplier", type=float, default=2.0, help="the paper's 2")
    p.add_argument("--out", required=True, help="the width spec, JSON {unit: multiplier}")


def run(args: argparse.Namespace) -> int:
    docs = [paths.read_mask_file(m) for m in args.mask]
    first = docs[0]
    model, meta = model_for(first["model"], first.get("dataset"), first.get("widths"))
    for doc, path in zip(docs, args.mask, strict=True):
        paths.check_mask_fits(doc, path, first["model"], meta)
    check_out_file(args.out)
    masks = [doc["mask"] for doc in docs]
    exclude = first.get("exclude")
    rule = _rule(args, model)
    levels = bottlenecks.level_ratios(model, masks, meta.input_shape, exclude)
    spec = bottlenecks.find(model, masks, meta.input_shape, rule, args.multiplier, exclude)
    for unit, ratio in levels[rule.level].items():
        mark = f"  -> x{args.multiplier:g}" if unit in spec else ""
        print(f"{rule.level} {unit}: {ratio:.1%} pruned{mark}")
    atomic_write_text(args.out, json.dumps(spec, indent=1))
    print(f"{len(spec)} bottleneck(s) of {first['model']} from {len(masks)} mask(s): {args.out}")
    return 0


def _rule(args: argparse.Namespace, model) -> bottlenecks.Rule:
    """The rule the options give, the paper's for the model where they give none."""
    default = next(
        (r for kind, r in bottlenecks.PAPER_RULES.items() if isinstance(model, kind)), None
    )
    count = args.count
    if count is None and args.threshold is None:  # neither bound given: the paper's count
        count = default.count if default else None
    level = args.level or (default.level if default else "layer")
    return bottlenecks.Rule(level, count, args.threshold)


COMMAND = Command(add_arguments, run)
