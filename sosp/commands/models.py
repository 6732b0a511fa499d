"""`sosp models`: the model zoo with parameter and MAC counts."""

from __future__ import annotations

import argparse
import json

from sosp import counting, models
from sosp.commands.base import Command, model_for


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        help="count for this dataset's input and classes "
        "(default: each model's own, cifar10 or imagenet)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per model")


def run(args: argparse.Namespace) -> int:
    rows = [_row(name, args.dataset) for name in models.names()]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'model':<20} {'dataset':<9} {'params':>12} {'MACs':>15}  summary")
    for r in rows:
        print(
            f"{r['model']:<20} {r['dataset']:<9} {r['params']:>12,} {r['macs']:>15,}  "
            f"{r['summary']}"
        )
    print("\nAny timm model is available as timm/<name>.")
    return 0


def _row(name: str, dataset: str | None) -> dict:
    """{model, dataset, params, macs, summary} of zoo model `name`."""
    model, meta = model_for(name, dataset)
    counts = counting.count(model, meta.input_shape).as_dict()
    return {"model": name, "dataset": meta.name, **counts, "summary": models.spec(name).summary}


COMMAND = Command(add_arguments, run)
