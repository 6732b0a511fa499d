"""What `sosp train` and `sosp retrain` share for weight-level pruning: the options of the
pruning-stable methods run during training (`--sparse gmp|str`), their hooks, and the counts
file a weight-pruned run ends with (`sosp.paths.sparsity`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from sosp import paths, unstructured
from sosp.allocation import ALLOCATIONS
from sosp.commands.base import AT_LEAST_ONE, FINITE, FRACTION, check_bounds
from sosp.errors import BadInput
from sosp.io import atomic_write_json, read_json
from sosp.sparse_hooks import STR, KeepMask, StepLR, gmp_targets
from sosp.train import evaluate

SPARSE_METHODS = ("gmp", "str")


def add_allocation(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allocation",
        default="global",
        choices=list(ALLOCATIONS),
        help="how the sparsity is spread over the layers (default global; see sosp.allocation)",
    )


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sparse",
        choices=SPARSE_METHODS,
        help="train pruning-stable: gmp (gradual magnitude pruning to --sparsity, every "
        "--gmp-interval epochs, cubic schedule) or str (soft threshold reparameterization, "
        "one learnable threshold per layer starting at --str-init); the model file keeps the "
        f"weight mask and {paths.SPARSITY} its counts",
    )
    p.add_argument("--sparsity", type=float, help="gmp: the final sparsity, in (0, 1)")
    p.add_argument("--gmp-interval", type=int, default=1, help="gmp: epochs between prunings")
    p.add_argument("--str-init", type=float, default=-5.0, help="str: initial threshold s")
    add_allocation(p)


def training_hooks(args: argparse.Namespace, model: nn.Module):
    """`make_hooks` of `sosp train --sparse`, else None; STR is registered on `model` now
    (before the optimizer is built)."""
    check_bounds(args, sparsity=FRACTION, gmp_interval=AT_LEAST_ONE, str_init=FINITE)
    if args.sparsity is not None and args.sparse != "gmp":
        raise BadInput(
            "--sparsity is the final sparsity of --sparse gmp; add --sparse gmp (str finds its "
            "sparsity itself, from --str-init)"
        )
    if args.sparse is None:
        return None
    if args.sparse == "gmp" and args.sparsity is None:
        raise BadInput("--sparse gmp prunes to --sparsity S; give it, e.g. --sparsity 0.9")
    if args.sparse == "str":
        hook = STR(model, args.str_init)
        return lambda net, recipe, train, test, device: [hook]

    def make(net, recipe, train, test, device):
        targets = gmp_targets(args.sparsity, args.gmp_interval, recipe.total_epochs)
        return [KeepMask(targets, args.allocation, probe=probe(test, device), label="gmp")]

    return make


def probe(test_batches, device):
    """The test accuracy of a model, as a hook records it right after pruning."""
    return lambda model: evaluate(model, test_batches, device)["acc"]


def retraining_hooks(recipe, train_batches, mask_hook: KeepMask) -> list:
    """The retraining's hooks: the mask, and the lr set every step by the schedule."""
    return [mask_hook, StepLR(recipe, len(train_batches))]


def write_counts(out: Path, meta, extra: dict | None = None) -> dict:
    """Write `paths.sparsity(out)`: the exact counts of the run's final network, its final test
    accuracy and every pruning's accuracy right after it (from the metrics rows)."""
    ckpt = paths.read_model_file(paths.model(out))
    model = paths.model_from_file(ckpt, paths.model(out))
    metrics = read_json(paths.metrics(out))
    pruned = [
        {"epoch": r["epoch"] - 1, "sparsity": r["pruned_to"], "acc": r.get("acc_after_pruning")}
        for r in metrics["epochs"]
        if "pruned_to" in r
    ]
    report = {
        **unstructured.counts(model, meta.input_shape),
        "final_test_acc": metrics["final_test_acc"],
        "prunings": pruned,
        "has_mask": unstructured.mask_of(ckpt) is not None,
        **(extra or {}),
    }
    atomic_write_json(paths.sparsity(out), report)
    return report
