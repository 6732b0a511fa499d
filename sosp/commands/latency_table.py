"""`sosp latency-table`: measure what each operation of a model costs on this device at each
count of kept channels, for `sosp prune --budget latency --latency-table FILE`.

sosp latency-table --model resnet56 --device cpu --layout nhwc --batch-size 64 \\
    --out runs/latency/resnet56_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from tqdm.auto import tqdm

from sosp import latency
from sosp.commands.base import (
    AT_LEAST_ONE,
    Command,
    add_dataset,
    add_device,
    add_model,
    add_no_progress,
    check_bounds,
    check_out_file,
    model_for,
    parse_widths,
    resolve_device,
    show_progress,
)
from sosp.errors import BadInput
from sosp.latency_table import LatencyTable, measure

STEPS = {"cuda": 8, "cpu": 4}  # default grid step per device type


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p, "; sets the input shape")
    add_device(p)
    latency.add_setup_arguments(p)
    p.add_argument(
        "--batch-size", type=int, default=64, help="the batch it will run at (default: 64)"
    )
    p.add_argument(
        "--step",
        type=int,
        help="channel counts measured: 1, the multiples of STEP and the full count, at most "
        "17 per layer; the device's granularity (benchmarks/channel_steps.py finds it) "
        f"(default: {STEPS['cuda']} on cuda, {STEPS['cpu']} on cpu)",
    )
    p.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the network as deployed, each BatchNorm after a conv folded into it, as "
        "`sosp export --fold-bn` writes it (default: on)",
    )
    p.add_argument("--repeats", type=int, default=15, help="timed rounds, median (default: 15)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default: 3)")
    p.add_argument(
        "--force",
        action="store_true",
        help="measure again even where --out already holds a table of this model and setup",
    )
    add_no_progress(p)
    p.add_argument("--out", required=True, help="the table's JSON file")


def run(args: argparse.Namespace) -> int:
    check_bounds(args, batch_size=AT_LEAST_ONE, repeats=AT_LEAST_ONE)
    if args.step is not None and args.step < 1:
        raise BadInput(f"--step must be at least 1, not {args.step}")
    if args.warmup < 0:
        raise BadInput(f"--warmup must be at least 0, not {args.warmup}")
    widths = parse_widths(args.widths)
    model, meta = model_for(args.model, args.dataset, widths)
    device = resolve_device(args.device)
    check_out_file(args.out)
    step = args.step or STEPS.get(torch.device(device).type, STEPS["cpu"])
    on = latency.measured_on(device, args.precision, args.layout, args.batch_size, args.fold_bn)
    network = {"model": args.model, "dataset": meta.name, "widths": widths}
    if not args.force and _cached(args.out, on, network, list(meta.input_shape), step):
        print(f"{args.out} already holds this table (measured on {on['device_name']}); kept it")
        return 0
    bar = (lambda it: tqdm(it, desc="latency", unit="op")) if show_progress(args) else iter
    model.eval()
    table = measure(
        model.to(device),
        meta.input_shape,
        device,
        args.precision,
        args.layout,
        args.batch_size,
        step,
        args.fold_bn,
        args.repeats,
        args.warmup,
        bar,
    )
    table.network = network
    table.save(args.out)
    print(
        f"{args.model} on {meta.name}, {on['device_name']}, {args.precision} {args.layout}, "
        f"batch {args.batch_size}: dense {table.dense_ms:.3g} ms; {len(table.nodes)} operations "
        f"in {len(table.ops)} grids; {_fit(table)}. Wrote {args.out}"
    )
    for name, why in table.unmodeled.items():
        print(f"warning: {name} has no grid and counts as fixed time ({why})")
    return 0


def _fit(table: LatencyTable) -> str:
    """How well the table predicts the whole pruned networks it was calibrated on."""
    errors = [
        abs(p["predicted_fraction"] / p["measured_fraction"] - 1)
        for p in table.calibration
        if p["measured_fraction"] > 0
    ]
    if not errors:
        return "not calibrated"
    return f"{len(errors)} pruned networks timed whole, predicted within {max(errors):.0%}"


def _cached(path: str, on: dict, network: dict, input_shape: list[int], step: int) -> bool:
    """Whether `path` holds a table of `network` measured with `on`, for `input_shape` and
    `step`. One of another device or torch version is refused: --force measures it again."""
    try:
        table = LatencyTable.load(path)
    except BadInput:
        return False  # none yet (or not a table): measure and write it
    if (
        table.measured_on.get("device_name") != on["device_name"]
        or table.measured_on.get("torch") != on["torch"]
    ):
        raise BadInput(
            f"{path} holds a table measured on {table.measured_on.get('device_name')} with torch "
            f"{table.measured_on.get('torch')}, not here ({on['device_name']}, torch "
            f"{on['torch']}); pass --force to measure it again here, or another --out"
        )
    same = dataclasses.replace(
        table, measured_on=on, network=network, input_shape=input_shape, step=step
    )
    return same == table


COMMAND = Command(add_arguments, run)
