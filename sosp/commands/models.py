"""`sosp models`: the model zoo with parameter and MAC counts, or (`--timm`, `--torchvision`)
which CNN (and timm's transformer and MLP) families of timm and torchvision SOSP can prune."""

from __future__ import annotations

import argparse
import json

from sosp import counting, models
from sosp.commands.base import Command, add_no_progress, model_for, show_progress
from sosp.errors import BadInput
from sosp.models import families


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Without options: the model zoo with parameter and MAC counts. With --timm or "
        "--torchvision: for each CNN family of that library (its smallest member, random "
        "weights, small inputs), whether SOSP can prune its channels ('prunes') or the "
        "operation that stops the analysis, then how many families prune. That traces every "
        "model (no saliencies are computed) and takes some seconds."
    )
    p.add_argument(
        "--dataset",
        help="count for this dataset's input and classes "
        "(default: each model's own, cifar10 or imagenet)",
    )
    p.add_argument(
        "--timm",
        action="store_true",
        help="list which timm CNN, vision transformer and MLP families prune instead of the zoo "
        "(the table of families is sosp/models/families.py)",
    )
    p.add_argument(
        "--torchvision",
        action="store_true",
        help="list which torchvision CNN families prune instead of the zoo",
    )
    p.add_argument(
        "--family",
        action="append",
        metavar="NAME",
        help="with --timm/--torchvision: only this family (repeatable), e.g. resnet",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per model (per family with --timm/--torchvision)",
    )
    add_no_progress(p)


def run(args: argparse.Namespace) -> int:
    sources = [s for s in ("timm", "torchvision") if getattr(args, s)]
    if sources:
        return _run_families(args, sources)
    if args.family:
        raise BadInput("--family selects from --timm or --torchvision; add one of them")
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
    print(
        "\nAny timm model is available as timm/<name>; `sosp models --timm` lists which CNN "
        "families prune."
    )
    return 0


def _row(name: str, dataset: str | None) -> dict:
    """{model, dataset, params, macs, summary} of zoo model `name`."""
    model, meta = model_for(name, dataset)
    counts = counting.count(model, meta.input_shape).as_dict()
    return {"model": name, "dataset": meta.name, **counts, "summary": models.spec(name).summary}


def _run_families(args: argparse.Namespace, sources: list[str]) -> int:
    """One line (or JSON object) per family of `sources`, then how many prune."""
    import torch
    from tqdm.auto import tqdm

    if args.dataset:
        raise BadInput(
            "--dataset sets the zoo table's input; --timm/--torchvision check each family "
            "on its own small input, so drop --dataset"
        )
    chosen = _chosen(sources, args.family)
    pruning = 0
    bar = tqdm(chosen, desc="tracing", unit="model", disable=not show_progress(args))
    say = bar.write  # above the bar where there is one, else a plain print
    if not args.json:
        say(f"{'source':<12} {'kind':<12} {'family':<14} {'model':<32} status")
    for f in bar:
        bar.set_postfix_str(f.model)
        torch.manual_seed(0)  # the same random weights every time (the analysis ignores them)
        status, structures = families.status(families.build(f), f.input_shape)
        prunes = status == families.PRUNES
        pruning += prunes
        if args.json:
            say(
                json.dumps(
                    {
                        "source": f.source,
                        "kind": f.kind,
                        "family": f.name,
                        "model": f.model,
                        "input_shape": list(f.input_shape),
                        "prunes": prunes,
                        "structures": structures,
                        "stops_at": None if prunes else status,
                    }
                )
            )
        else:
            shown = f"prunes ({structures:,} structures)" if prunes else families.short(status)
            say(f"{f.source:<12} {f.kind:<12} {f.name:<14} {f.model:<32} {shown}")
    bar.close()
    if not args.json:
        print(f"{pruning} of {len(chosen)} families prune")
    return 0


def _chosen(sources: list[str], names: list[str] | None) -> list[families.Family]:
    """The families of `sources`, only those named in `names` where given (each name must be
    a family of at least one source)."""
    every = [f for s in sources for f in families.families(s)]
    every += families.transformer_families() if "timm" in sources else []
    if not names:
        return every
    known = {f.name for f in every}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(
            f"--family {', '.join(unknown)}: no such family in {' or '.join(sources)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return [f for f in every if f.name in names]


COMMAND = Command(add_arguments, run)
