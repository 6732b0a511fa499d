"""Does a latency budget buy the time it asks for? ResNet-56 (or ResNet-50 at 224 px) pruned by
`--method` to latency budgets, against the same ratios as MAC budgets, each network measured.

    python benchmarks/latency_budget.py --threads 2                     # ResNet-56, CPU, nhwc
    python benchmarks/latency_budget.py --device cuda --imagenet --precision bf16 \\
        --batch-size 256 --ratios 0.4 --n-samples 64                    # ResNet-50, GPU

The network is randomly initialized and its BatchNorm statistics re-estimated on random
samples (the timing does not depend on the values). One latency table is measured
(`sosp.latency_table.measure`, written beside the CSV unless `--table` names one to reuse),
then for each coupling (filter: per-filter structures with `exclude=resnet_downsample`;
stream: residual-stream channels) and each budget (latency; macs, for comparison) one
`sosp.prune_ratios` call prunes at every ratio with the table, so every report holds the
predicted latency and the latency measured on the spot (dense and pruned timed in turn, in the
table's precision, layout and batch, BatchNorm folded). Each pruned network is checked against
the soft-masked dense one before it counts.

Writes one CSV row per (coupling, budget, ratio): the speed-up asked for (1 / (1 - ratio)
for a latency budget), the table's prediction and the measurement, and whether the measured
speed-up is within 10% of the one asked for and the prediction within 10% of the measured
latency (both as fractions of the dense network timed with it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import latency as bench  # benchmarks/latency.py, beside this file
import torch

import sosp
from sosp import batchnorm, data
from sosp.io import atomic_write_csv
from sosp.latency import add_setup_arguments
from sosp.latency_table import LatencyTable, measure
from sosp.settings import PruneSettings

COLUMNS = ["network", "device", "device_name", "torch", "precision", "layout", "batch"]
COLUMNS += ["method", "coupling", "budget", "ratio", "macs_removed", "speedup_asked"]
COLUMNS += ["speedup_predicted", "speedup_measured", "predicted_fraction", "measured_fraction"]
COLUMNS += ["dense_ms", "pruned_ms", "speedup_within_10pct", "prediction_within_10pct"]
COLUMNS += ["corrections", "speedup_table_alone", "speedup_predicted_corrected"]
COLUMNS += ["corrected_prediction_within_10pct", "check_rel_diff", "prune_s"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--imagenet", action="store_true", help="ResNet-50 at 224 px (default: ResNet-56)"
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--method", default="sosp_h", help="pruning method (default: sosp_h)")
    p.add_argument(
        "--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7], help="(default: 0.3 0.5 0.7)"
    )
    p.add_argument("--budgets", nargs="+", choices=("latency", "macs"), default=["latency", "macs"])
    p.add_argument(
        "--coupling", nargs="+", choices=("filter", "stream"), default=["filter", "stream"]
    )
    add_setup_arguments(p, layout="nhwc")
    p.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    p.add_argument("--step", type=int, help="table grid step (default: 8 on cuda, 4 on cpu)")
    p.add_argument("--n-samples", type=int, default=128, help="N' random samples (default: 128)")
    p.add_argument("--repeats", type=int, default=15, help="table rounds (default: 15)")
    p.add_argument(
        "--corrections",
        type=int,
        default=PruneSettings.latency_corrections,
        help="latency_corrections of the latency budgets (default: %(default)s; 0: the table "
        "alone)",
    )
    p.add_argument("--table", help="a table to reuse (default: measure one, written beside --out)")
    p.add_argument(
        "--out", help="CSV (default: results/benchmarks/latency_budget_<network>_<device>.csv)"
    )
    args = p.parse_args(argv)
    net = "resnet50" if args.imagenet else "resnet56"
    args.out = args.out or f"results/benchmarks/latency_budget_{net}_{args.device}.csv"
    args.step = args.step or (8 if args.device.startswith("cuda") else 4)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name, model, shape, classes = bench.network(args.imagenet)
    model = model.to(args.device)
    ds = data.synthetic(args.n_samples, shape, classes)
    loader = torch.utils.data.DataLoader(ds, batch_size=min(32, args.n_samples))
    batches = [(x.to(args.device), y.to(args.device)) for x, y in loader]
    batchnorm.recalibrate(model, batches)
    table_path = Path(args.table or Path(args.out).with_suffix(".table.json"))
    if args.table is None:
        start = time.perf_counter()
        table = measure(
            model,
            shape,
            args.device,
            args.precision,
            args.layout,
            args.batch_size,
            args.step,
            repeats=args.repeats,
            progress=_progress,
        )
        table.network = {"model": name}
        table.save(table_path)
        print(
            f"table: {time.perf_counter() - start:.0f} s, dense {table.dense_ms:.1f} ms, "
            f"calibration offset {table.offset_ms:.2f} ms -> {table_path}",
            file=sys.stderr,
        )
    table = LatencyTable.load(table_path)
    rows = []
    for coupling in args.coupling:
        exclude = "resnet_downsample" if coupling == "filter" else None
        for budget in args.budgets:
            start = time.perf_counter()
            results = sosp.prune_ratios(
                model,
                args.method,
                args.ratios,
                batches,
                n_samples=args.n_samples,
                budget=budget,
                latency_table=str(table_path),
                coupling=coupling,
                exclude=exclude,
                latency_corrections=args.corrections,
            )
            seconds = (time.perf_counter() - start) / len(results)
            for r in results:
                diff = bench.check_pruned(model, r, shape, classes, args.device, exclude)
                rows.append(_row(name, args, table, coupling, budget, r.report, diff, seconds))
                atomic_write_csv(args.out, rows, COLUMNS)
                print(_line(rows[-1]), file=sys.stderr)
    print(f"wrote {args.out}")


def _row(name, args, table, coupling, budget, report, diff, seconds) -> dict:
    lat = report["latency"]
    on = lat["measured_on"]
    ratio = report["ratio"]
    asked = 1 / (1 - ratio) if budget == "latency" else None
    predicted_fraction = lat["predicted_ms"] / lat["dense_table_ms"]
    measured_fraction = lat["measured_ms"] / lat["dense_ms"]
    rounds = lat["corrections"]
    corrected = lat["speedup_predicted_corrected"]
    return {
        "network": name,
        "device": on["device"],
        "device_name": on["device_name"],
        "torch": on["torch"],
        "precision": on["precision"],
        "layout": on["layout"],
        "batch": on["batch"],
        "method": args.method,
        "coupling": coupling,
        "budget": budget,
        "ratio": ratio,
        "macs_removed": round(report["macs_removed"], 4),
        "speedup_asked": None if asked is None else round(asked, 3),
        "speedup_predicted": round(lat["speedup_predicted"], 3),
        "speedup_measured": round(lat["speedup_measured"], 3),
        "predicted_fraction": round(predicted_fraction, 4),
        "measured_fraction": round(measured_fraction, 4),
        "dense_ms": round(lat["dense_ms"], 2),
        "pruned_ms": round(lat["measured_ms"], 2),
        "speedup_within_10pct": None
        if asked is None
        else abs(lat["speedup_measured"] / asked - 1) <= 0.1,
        "prediction_within_10pct": abs(predicted_fraction / measured_fraction - 1) <= 0.1,
        "corrections": max(len(rounds) - 1, 0),
        "speedup_table_alone": round(1 / rounds[0]["measured_fraction"], 3) if rounds else None,
        "speedup_predicted_corrected": None if corrected is None else round(corrected, 3),
        "corrected_prediction_within_10pct": None
        if corrected is None
        else abs(lat["speedup_measured"] / corrected - 1) <= 0.1,
        "check_rel_diff": f"{diff:.1e}",
        "prune_s": round(seconds, 1),
    }


def _line(row: dict) -> str:
    asked = f"asked {row['speedup_asked']:.2f}x, " if row["speedup_asked"] else ""
    alone = row["speedup_table_alone"]
    if row["corrections"]:
        asked += f"the table alone {alone:.2f}x, {row['corrections']} corrections, "
    return (
        f"{row['coupling']} {row['budget']} {row['ratio']:g}: {asked}predicted "
        f"{row['speedup_predicted']:.2f}x, measured {row['speedup_measured']:.2f}x "
        f"({row['pruned_ms']:.1f} of {row['dense_ms']:.1f} ms); MACs -{row['macs_removed']:.0%}"
    )


def _progress(items):
    for i, item in enumerate(items):
        print(f"\rtable: operation {i + 1}/{len(items)}", end="", file=sys.stderr)
        yield item
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
