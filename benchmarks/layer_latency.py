"""Where a pruned network's forward time goes: each conv of the dense network against the same
conv of its pruned copy, and the rest of the forward pass (BatchNorm, activations, sums).

    python benchmarks/layer_latency.py --threads 2                    # ResNet-56, CPU, batch 64
    python benchmarks/layer_latency.py --coupling stream --round-to 16 --layouts nhwc
    python benchmarks/layer_latency.py --device cuda --imagenet --precision bf16 --layouts nhwc

The networks are built as in `benchmarks/latency.py` (same seed, same `sosp.prune` call, the
pruned one checked against the soft-masked dense one), put in eval mode and each of `--layouts`, and
run eagerly under `torch.inference_mode()` (bf16 autocast with `--precision bf16`). Each conv
is timed by forward hooks around it (the device synchronized in each hook), over `--repeats`
forwards taken alternately on the two networks after `--warmup`; the medians per conv are
reported, their sums per stage (the first component of the conv's name) and over all convs,
and the whole forward without hooks (`kind` forward), timed alike, whose difference to the
convs is everything else. One CSV row per conv, stage, `convs` and `forward`, with the channel
counts of both convs: a conv's time follows its channel counts only as far as the kernels
allow (`benchmarks/channel_steps.py`: on a 2-core AVX-512 Xeon, a channels_last fp32 conv with
16 inputs took 0.86-0.95 of its 16-output time at any output count from 1 to 15).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import latency  # benchmarks/latency.py, beside this file
import torch
from torch import nn

from sosp.errors import SospError
from sosp.io import atomic_write_csv
from sosp.timing import synchronize, timed

COLUMNS = [
    "network",
    "device",
    "device_name",
    "threads",
    "torch",
    "coupling",
    "round_to",
    "scope",
    "macs_removed",
    "precision",
    "layout",
    "batch",
    "kind",
    "name",
    "dense_in",
    "dense_out",
    "pruned_in",
    "pruned_out",
    "dense_ms",
    "pruned_ms",
    "speedup",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    latency.add_network_arguments(p)
    p.add_argument(
        "--precision",
        choices=latency.PRECISIONS,
        default="fp32",
        help="fp32, or bf16 autocast (default: fp32)",
    )
    p.add_argument(
        "--layouts",
        nargs="+",
        choices=("nchw", "nhwc"),
        default=["nchw"],
        help="memory layouts (default: nchw)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards (default: 2)")
    p.add_argument("--repeats", type=int, default=7, help="timed forwards, median (default: 7)")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: batch 8, N'=32, 1 warm-up, 2 repeats"
    )
    p.add_argument(
        "--out",
        help="CSV written (default: results/benchmarks/layer_latency_<device>.csv; with "
        "--quick, in the temporary folder)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.batch_size, args.n_samples, args.warmup, args.repeats = 8, 32, 1, 2
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--repeats and --batch-size must be at least 1 and --warmup at least 0")
    if args.out is None:
        name = f"layer_latency_{torch.device(args.device).type}.csv"
        folder = Path(tempfile.gettempdir()) if args.quick else Path("results/benchmarks")
        args.out = str(folder / (f"sosp_{name}" if args.quick else name))
    return args


class ConvTimer:
    """Forward hooks on every Conv2d of `model` that add each call's wall milliseconds (the
    device synchronized before and after) to `ms[name]` while `on`."""

    def __init__(self, model: nn.Module, device: str):
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.channels: dict[str, tuple[int, int]] = {}
        self.on = False
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                self.channels[name] = (m.in_channels, m.out_channels)
                self.handles += [
                    m.register_forward_pre_hook(self.start_hook(device)),
                    m.register_forward_hook(self.stop_hook(name, device)),
                ]
        self.started = 0.0

    def start_hook(self, device: str):
        def hook(module, inputs):
            synchronize(device)
            self.started = time.perf_counter()

        return hook

    def stop_hook(self, name: str, device: str):
        def hook(module, inputs, output):
            synchronize(device)
            if self.on:
                self.ms[name].append((time.perf_counter() - self.started) * 1e3)

        return hook

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in self.ms.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def forward_fn(model: nn.Module, precision: str, device: str):
    def forward(x: torch.Tensor) -> torch.Tensor:
        with latency.autocast_for(device, precision):
            return model(x)

    return forward


def medians(models: dict[str, nn.Module], x: torch.Tensor, args) -> dict[str, dict]:
    """{network: {"convs": {conv name: median ms}, "channels": {name: (in, out)},
    "forward": median ms of the whole forward without hooks}}; calls alternate between the
    networks."""
    forwards = {k: forward_fn(m, args.precision, args.device) for k, m in models.items()}
    timers = {k: ConvTimer(m, args.device) for k, m in models.items()}
    whole: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for f in forwards.values():
                f(x)
        for _ in range(args.repeats):
            for k, f in forwards.items():
                timers[k].on = True
                f(x)
                timers[k].on = False
        for t in timers.values():
            t.remove()
        for _ in range(args.repeats):
            for k, f in forwards.items():
                whole[k].append(timed(args.device, f, x)[1] * 1e3)
    return {
        k: {
            "convs": timers[k].medians(),
            "channels": timers[k].channels,
            "forward": statistics.median(whole[k]),
        }
        for k in models
    }


def rows_of(got: dict[str, dict], common: dict) -> list[dict]:
    """One row per conv of the dense network (a conv the pruned one lacks has no pruned
    figures), per stage, over all convs (`convs`) and for the whole forward (`forward`)."""
    dense, pruned = got["dense"], got["pruned"]
    rows, stages = [], defaultdict(lambda: [0.0, 0.0])
    for name, d_ms in dense["convs"].items():
        p_ms = pruned["convs"].get(name)
        d_in, d_out = dense["channels"][name]
        p_in, p_out = pruned["channels"].get(name, (None, None))
        rows.append(row(common, "conv", name, d_ms, p_ms, (d_in, d_out, p_in, p_out)))
        stage = stages[name.split(".")[0]]
        stage[0] += d_ms
        stage[1] += p_ms or 0.0
    for name, (d_ms, p_ms) in stages.items():
        rows.append(row(common, "stage", name, d_ms, p_ms))
    d_all, p_all = sum(dense["convs"].values()), sum(pruned["convs"].values())
    rows.append(row(common, "convs", "all convs", d_all, p_all))
    rows.append(row(common, "forward", "forward", dense["forward"], pruned["forward"]))
    return rows


def row(common: dict, kind: str, name: str, d_ms: float, p_ms: float | None, ch=None) -> dict:
    d_in, d_out, p_in, p_out = ch or (None,) * 4
    return {
        **common,
        "kind": kind,
        "name": name,
        "dense_in": d_in,
        "dense_out": d_out,
        "pruned_in": p_in,
        "pruned_out": p_out,
        "dense_ms": round(d_ms, 3),
        "pruned_ms": None if p_ms is None else round(p_ms, 3),
        "speedup": latency.speedup(d_ms, p_ms),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    torch.manual_seed(0)
    name, model, shape, classes = latency.network(args.imagenet)
    model = model.to(args.device).eval()
    rows: list[dict] = []
    for options in latency.variants(args):
        try:
            result = latency.prune(args, options, model, shape, classes)
        except SospError as e:  # e.g. a round_to no layer of the network can keep
            print(f"sosp.prune rejected the settings {options}: {e}", flush=True)
            continue
        latency.check_pruned(model, result, shape, classes, args.device, options["exclude"])
        for layout in args.layouts:
            fmt = latency.memory_format(layout)
            models = {"dense": model, "pruned": result.model.eval()}
            models = {k: copy.deepcopy(m).to(memory_format=fmt) for k, m in models.items()}
            x = torch.randn(args.batch_size, *shape, device=args.device)
            got = medians(models, x.contiguous(memory_format=fmt), args)
            common = {
                "network": name,
                "device": torch.device(args.device).type,
                "device_name": latency.device_name(args.device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                **{k: options[k] for k in ("coupling", "round_to", "scope")},
                "macs_removed": round(result.report["macs_removed"], 4),
                "precision": args.precision,
                "layout": layout,
                "batch": args.batch_size,
            }
            mine = rows_of(got, common)
            rows += mine
            atomic_write_csv(args.out, rows, COLUMNS)
            print_summary(mine)
    print(f"wrote {args.out}")


def print_summary(rows: list[dict]) -> None:
    first = rows[0]
    print(", ".join(f"{k} {first[k]}" for k in ("coupling", "round_to", "scope", "layout")))
    for r in rows:
        if r["kind"] != "conv":
            print(
                f"  {r['name']:>9}: dense {r['dense_ms']:8.2f} ms, pruned {r['pruned_ms']:8.2f} "
                f"ms, {r['speedup']}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
