"""`sosp retrain`: IMP after training, weight-level: prune a trained network by magnitude
(`--allocation`) to `--sparsity` in `--cycles` prune-retrain cycles of `--budget` epochs each,
retraining by a schedule (`--schedule` ft, lrw, slr, clr; `sosp.retraining`) that follows the
network's training recipe. One cycle is the One Shot setting, several the Iterative one.

sosp retrain --checkpoint runs/dense/model.pt --sparsity 0.9 --schedule slr --budget 10 \
    --out runs/imp

The training recipe is read from the metrics file beside the checkpoint (or --train-recipe /
--train-set). A network that already holds a weight mask (from `sosp train --sparse` or an
earlier retrain) keeps it, pruned further where --sparsity asks for more. The run folder is a
training run's (resumable) plus its sparsity file (`sosp.paths.sparsity`): exact counts and
the accuracy after each pruning.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from sosp import data, paths, recipes, retraining
from sosp.commands import sparse
from sosp.commands.base import AT_LEAST_ONE, FRACTION, Command, check_bounds, parse_options
from sosp.commands.train import (
    _add_run_arguments,
    _check_out,
    _run,
    _widths_entry,
    check_run_arguments,
)
from sosp.errors import BadInput
from sosp.io import read_json
from sosp.sparse_hooks import KeepMask, imp_targets
from sosp.unstructured import mask_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="model file of the trained network")
    p.add_argument(
        "--sparsity",
        type=float,
        help="fraction of the prunable weights (Conv2d, Linear) pruned at the end, in (0, 1); "
        "leave out to retrain a network's own weight mask",
    )
    sparse.add_allocation(p)
    p.add_argument(
        "--schedule",
        default="ft",
        choices=list(retraining.SCHEDULES),
        help="retraining schedule: ft (last lr), lrw (rewinding), slr (scaled restart), clr "
        "(cyclic restart)",
    )
    p.add_argument("--budget", type=int, required=True, help="retraining epochs per cycle")
    p.add_argument("--cycles", type=int, default=1, help="prune-retrain cycles (1: One Shot)")
    p.add_argument(
        "--train-recipe",
        help="the preset the network was trained with (default: the recipe in the "
        f"{paths.METRICS} beside --checkpoint)",
    )
    p.add_argument("--train-set", nargs="*", default=[], metavar="KEY=VALUE", help="its overrides")
    _add_run_arguments(p)


def from_dict(d: dict) -> recipes.Recipe:
    """The Recipe whose `as_dict` is `d`."""
    d = dict(d)
    original = d.pop("original", None)
    d["milestones"] = tuple(d.get("milestones", ()))
    return recipes.Recipe(**d, original=from_dict(original) if original else None)


def original_recipe(args: argparse.Namespace, checkpoint: Path, ckpt: dict) -> recipes.Recipe:
    """The recipe the checkpoint was trained by: --train-recipe, else its run's metrics'."""
    if args.train_recipe:
        return recipes.resolve(args.train_recipe, parse_options(args.train_set, "--train-set"))
    found = paths.metrics(checkpoint.parent)
    if not found.is_file():
        raise BadInput(
            f"{checkpoint} has no {paths.METRICS} beside it to read its training recipe from; "
            "pass --train-recipe PRESET (and --train-set KEY=VALUE ...)"
        )
    recipe = from_dict(read_json(found)["config"]["recipe"])
    return recipe.original or recipe  # a retrained network: the training before it


def run(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    check_bounds(args, sparsity=FRACTION, budget=AT_LEAST_ONE, cycles=AT_LEAST_ONE)
    checkpoint = Path(args.checkpoint)
    ckpt = paths.read_model_file(checkpoint)
    mask = mask_of(ckpt)
    if args.sparsity is None and mask is None:
        raise BadInput(f"{checkpoint} holds no weight mask: give --sparsity S to prune it")
    if args.recipe or args.recipe_file:
        raise BadInput("sosp retrain builds its recipe from --schedule and --budget; drop "
                       "--recipe/--recipe-file (--set overrides other keys)")  # fmt: skip
    original = original_recipe(args, checkpoint, ckpt)
    keys = parse_options(args.set, "--set")
    unknown = sorted(set(keys) - {f.name for f in dataclasses.fields(recipes.Recipe)})
    if unknown or {"epochs", "cycles", "schedule", "original"} & keys.keys():
        raise BadInput(
            "--set takes recipe keys other than epochs, cycles and schedule (--budget, "
            f"--cycles, --schedule set those): {', '.join(unknown or keys)}"
        )
    typed = {k: recipes._coerce(k, v, getattr(original, k)) for k, v in keys.items()}
    recipe = recipes.retraining(original, args.schedule, args.budget, args.cycles, **typed)
    _check_out(args.out)
    torch.manual_seed(args.seed)
    model = paths.model_from_file(ckpt, checkpoint)
    architecture = {k: ckpt.get(k) for k in ("model", "dataset")} | _widths_entry(
        ckpt.get("widths")
    )
    if ckpt.get("mask"):
        architecture |= {"mask": ckpt["mask"], "exclude": ckpt.get("exclude")}
    targets = imp_targets(args.sparsity, args.cycles, args.budget) if args.sparsity else {}
    source = {
        "command": "retrain",
        "model": ckpt["model"],
        "dataset": ckpt["dataset"],
        "checkpoint": str(checkpoint.resolve()),
    }

    def make_hooks(net, recipe, train, test, device):
        keep = KeepMask(targets, args.allocation, mask, sparse.probe(test, device), "imp")
        return sparse.retraining_hooks(recipe, train, keep)

    out = Path(args.out)
    _run(args, model, source, architecture, {}, out, recipe=recipe, make_hooks=make_hooks)
    meta = data.info(ckpt["dataset"])
    settings = {k: getattr(args, k) for k in ("schedule", "budget", "cycles", "allocation")}
    sparse.write_counts(out, meta, settings)
    return 0


COMMAND = Command(add_arguments, run)
