"""Forward latency of a dense network against its pruned copy from `sosp.prune`.

    python benchmarks/latency.py --quick                   # smoke test: ResNet-56, eager fp32
    python benchmarks/latency.py                           # ResNet-56, CPU, every mode/precision
    python benchmarks/latency.py --threads 2 --modes eager --batch-sizes 1 64 256
    python benchmarks/latency.py --device cuda             # CUDA; batches 1 64 256 1024
    python benchmarks/latency.py --device cuda --imagenet  # torchvision ResNet-50 at 224 px
    python benchmarks/latency.py --coupling filter stream --round-to none 8   # four maskings

The network (ResNet-56 from `sosp.models` on CIFAR-10-shaped 3x32x32 inputs, or with
`--imagenet` torchvision's ResNet-50 on 3x224x224) is randomly initialized, its BatchNorm
statistics are re-estimated on the pruning samples (random images and labels: the timing does
not depend on the values), and `sosp.prune` removes `--ratio` of its MACs (`budget="macs"`,
`exclude`: "resnet_downsample" for per-filter structures, nothing for coupled streams, whose
downsampling convs write the stream). Every combination of `--coupling`, `--round-to` and
`--scope` (global or local) is one pruned network. Before timing, the pruned network is
checked against the soft-masked dense one (same outputs) and every timed output for its shape
and finiteness.

Then, for every mode (eager; graph: CUDA-graph replay; `torch.compile`), precision (fp32;
bf16 = bf16 autocast), memory layout (`--layouts`: nchw, or nhwc = channels_last; by default
nchw for fp32 and nhwc for bf16), BatchNorm kept or folded into the convs (`--batchnorm`) and
batch size, the forward pass of the dense and the pruned
network is timed under `torch.inference_mode()` in eval mode: `--warmup` calls, then
`--repeats` timed calls taken alternately on the two networks (so load on a shared machine hits
both alike), the GPU synchronized around each; the median and the fastest call are reported
(`speedup`, `speedup_min`: on a shared CPU the fastest call is the least disturbed), with the
machine's 1-minute load average (`load_1min`: far above the thread count, other work
competed). A
setting that fails (e.g. `torch.compile` without a working C++ compiler) gets its row with the
`error` column filled instead of stopping the run.

Writes one CSV row per (network, device, mode, precision, batch) to `--out` (rewritten
atomically after each row) and prints the table at the end.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from torch import nn

import sosp
from sosp import batchnorm, counting, data, models
from sosp.errors import SospError
from sosp.exporting import folded_batchnorm
from sosp.io import atomic_write_csv
from sosp.latency import PRECISIONS, autocast_for, device_name, memory_format
from sosp.structures import analyze
from sosp.surgery import indices_from_mask, soft_masked
from sosp.timing import timed

MODES = ("eager", "graph", "compile")
BATCHNORM = ("kept", "folded")
LAYOUTS = ("auto", "nchw", "nhwc")
COLUMNS = [
    "network",
    "input_shape",
    "device",
    "device_name",
    "threads",
    "cudnn_benchmark",
    "torch",
    "mode",
    "precision",
    "layout",
    "batchnorm",
    "batch",
    "dense_ms",
    "pruned_ms",
    "speedup",
    "dense_min_ms",
    "pruned_min_ms",
    "speedup_min",
    "dense_macs",
    "pruned_macs",
    "macs_removed",
    "dense_params",
    "pruned_params",
    "params_removed",
    "method",
    "ratio",
    "budget",
    "exclude",
    "n_samples",
    "round_to",
    "coupling",
    "scope",
    "compile_mode",
    "freezing",
    "warmup",
    "repeats",
    "dense_first_call_s",
    "pruned_first_call_s",
    "check_rel_diff",
    "load_1min",
    "error",
]


def add_network_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say which network is pruned how, and where it runs (shared with
    layer_latency.py)."""
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--imagenet",
        action="store_true",
        help="torchvision ResNet-50 at 3x224x224, 1000 classes (default: ResNet-56 at 3x32x32)",
    )
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--method", default="sosp_h", help="pruning method (default: sosp_h)")
    p.add_argument(
        "--ratio", type=float, default=0.5, help="fraction of the MACs removed (default: 0.5)"
    )
    p.add_argument(
        "--n-samples", type=int, default=64, help="N', random samples to prune on (default: 64)"
    )
    p.add_argument(
        "--round-to",
        nargs="+",
        default=["none"],
        metavar="K",
        help="keep multiples of K channels per layer; 'none' for no rounding; several values "
        "give one pruned network each (default: none)",
    )
    p.add_argument(
        "--coupling",
        nargs="+",
        choices=("filter", "stream"),
        default=["filter"],
        help="what one structure is: filter (the paper's) or stream (a residual-stream channel "
        "with all its writers); several values give one pruned network each (default: filter)",
    )
    p.add_argument(
        "--scope",
        nargs="+",
        choices=("global", "local"),
        default=["global"],
        help="global: one ranking over all layers (the paper's); local: the same fraction of "
        "every layer; several values give one pruned network each (default: global)",
    )
    p.add_argument(
        "--exclude",
        default="auto",
        help="layers never pruned: a preset or fnmatch pattern; auto = resnet_downsample for "
        "filter coupling, nothing for stream coupling (default: auto)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_network_arguments(p)
    p.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=["eager", "compile"],
        help="eager; graph: the eager forward captured once per batch shape as a CUDA graph and "
        "replayed (what a deployment at small batches does: no Python launch cost; CUDA only); "
        "compile: torch.compile (default: eager and compile)",
    )
    p.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile's mode: default, reduce-overhead, max-autotune (default: default)",
    )
    p.add_argument(
        "--freezing",
        action="store_true",
        help="torch._inductor.config.freezing = True: compile treats the weights as constants "
        "(BatchNorm folded, weights prepacked for oneDNN on a CPU; inference only)",
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=list(PRECISIONS),
        help="fp32 and/or bf16 (bf16 autocast) (default: both)",
    )
    p.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=["auto"],
        help="memory layout of the networks and inputs: nchw (contiguous), nhwc "
        "(channels_last), auto = nchw for fp32 and nhwc for bf16 (default: auto)",
    )
    p.add_argument(
        "--batchnorm",
        nargs="+",
        choices=BATCHNORM,
        default=["kept"],
        help="kept, and/or folded: each BatchNorm after a conv folded into the conv "
        "(`sosp export --fold-bn`), in the dense and the pruned network alike (default: kept)",
    )
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        help="batch sizes timed (default: 1 64 256, and 1024 for ResNet-56)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed calls first, at least one; the first compiles (in compile mode) and its "
        "output is checked (default: 3)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed calls, median (default: 10)")
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="torch.backends.cudnn.benchmark = True: cuDNN times its algorithms for every new "
        "shape and keeps the fastest (default: its heuristics)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: ResNet-56, eager fp32, batches 1 and 64, 1 warm-up and 3 repeats, "
        "N'=32; writes to the temporary folder unless --out is given",
    )
    p.add_argument(
        "--out",
        help="CSV written (default: results/benchmarks/latency_<device>.csv, "
        "latency_imagenet_<device>.csv with --imagenet)",
    )
    args = p.parse_args(argv)
    if args.quick:
        if args.imagenet:
            p.error("--quick runs ResNet-56; leave out --imagenet")
        args.modes, args.precisions, args.batch_sizes = ["eager"], ["fp32"], [1, 64]
        args.warmup, args.repeats, args.n_samples = 1, 3, 32
    if args.batch_sizes is None:
        args.batch_sizes = [1, 64, 256] if args.imagenet else [1, 64, 256, 1024]
    if args.out is None:
        kind = torch.device(args.device).type
        name = f"latency_{'imagenet_' if args.imagenet else ''}{kind}.csv"
        folder = Path(tempfile.gettempdir()) if args.quick else Path("results/benchmarks")
        args.out = str(folder / (f"sosp_{name}" if args.quick else name))
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be at least 1 and --warmup at least 0")
    return args


def network(imagenet: bool) -> tuple[str, nn.Module, tuple[int, ...], int]:
    """(name, randomly initialized model, input shape, classes) of the benchmark."""
    if imagenet:
        return "resnet50", models.create("resnet50", 1000, 3, 224), (3, 224, 224), 1000
    return "resnet56", models.create("resnet56", 10, 3, 32), (3, 32, 32), 10


def variants(args: argparse.Namespace) -> list[dict]:
    """The `sosp.prune` keyword arguments (besides model, method, ratio and data) of every
    pruned network the run times: one per (coupling, round_to, scope)."""
    out = []
    for coupling in args.coupling:
        exclude = args.exclude
        if exclude == "auto":
            exclude = "resnet_downsample" if coupling == "filter" else None
        for k in args.round_to:
            for scope in args.scope:
                out.append(
                    {
                        "budget": "macs",
                        "scope": scope,
                        "exclude": exclude,
                        "n_samples": args.n_samples,
                        "coupling": coupling,
                        "round_to": None if k == "none" else int(k),
                    }
                )
    return out


def prune(args, options: dict, model: nn.Module, shape: tuple[int, ...], classes: int):
    """The `sosp.prune` result of `model` (on `args.device`) with `options`, after re-estimating
    its BatchNorm statistics on the same random samples."""
    device = args.device
    ds = data.synthetic(args.n_samples, shape, classes)
    loader = torch.utils.data.DataLoader(ds, batch_size=min(32, args.n_samples))
    batches = [(x.to(device), y.to(device)) for x, y in loader]
    batchnorm.recalibrate(model, batches)
    return sosp.prune(model, args.method, args.ratio, batches, **options)


@torch.no_grad()
def check_pruned(model, result, shape, classes, device, exclude) -> float:
    """Relative max difference between the pruned network and the soft-masked dense one on 8
    random samples; raises when the outputs' shapes differ, are not finite or disagree."""
    x = torch.randn(8, *shape, device=device)
    out = result.model.eval()(x)
    if out.shape != (8, classes) or not torch.isfinite(out).all():
        raise RuntimeError(f"pruned output has shape {tuple(out.shape)} or is not finite")
    graph = analyze(model, shape, exclude)
    ref = soft_masked(model, graph, indices_from_mask(graph, result.mask)).eval()(x)
    diff = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    if diff > 1e-3:
        raise RuntimeError(f"pruned network differs from the soft-masked one: rel diff {diff}")
    return diff


def layout_for(layout: str, precision: str) -> str:
    """nchw or nhwc: `layout`, with auto resolved by the precision."""
    if layout == "auto":
        return "nhwc" if precision == "bf16" else "nchw"
    return layout


def prepared(
    model: nn.Module,
    mode: str,
    precision: str,
    layout: str,
    compile_mode: str,
    device: str,
    fold: bool,
):
    """A function running one forward of a copy of `model` in `mode`, `precision` and
    `layout` (nchw or nhwc), with BatchNorm folded into the convs where `fold`."""
    model = folded_batchnorm(model) if fold else copy.deepcopy(model).eval()
    model = model.to(memory_format=memory_format(layout))
    if mode == "compile":
        model = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with autocast_for(device, precision):
            return model(x)

    return graphed(forward, device) if mode == "graph" else forward


def graphed(forward, device: str):
    """`forward` captured as a CUDA graph the first time it meets an input (by storage and
    shape), replayed after: the same kernels without Python's launch cost per module."""
    if torch.device(device).type != "cuda":
        raise RuntimeError("mode graph needs a CUDA device")
    graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def replay(x: torch.Tensor) -> torch.Tensor:
        key = (x.data_ptr(), tuple(x.shape), x.stride())
        if key not in graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the graph (cuDNN's choices)
                for _ in range(2):
                    forward(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward(x)
            graphs[key] = (graph, out)
        graph, out = graphs[key]
        graph.replay()
        return out

    return replay


def time_forwards(forwards: dict, x: torch.Tensor, classes: int, args) -> dict[str, dict]:
    """{name: {"ms": median ms, "min_ms": fastest call, "first_s": seconds of the first call}
    or {"error": text}} of each forward on `x`; warm-up first, then the timed calls taken
    alternately. On a shared machine the fastest call is the one least disturbed by others."""
    out: dict[str, dict] = {}
    alive = {}
    for name, forward in forwards.items():
        try:
            y, first = timed(args.device, forward, x)
            if y.shape != (len(x), classes) or not torch.isfinite(y.float()).all():
                raise RuntimeError(f"output of shape {tuple(y.shape)} or not finite")
            for _ in range(args.warmup - 1):
                forward(x)
            out[name] = {"first_s": round(first, 3)}
            alive[name] = forward
        except Exception as e:
            out[name] = {"error": f"{name}: {type(e).__name__}: {first_line(e)}"}
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    times: dict[str, list[float]] = {name: [] for name in alive}
    for _ in range(args.repeats):
        for name, forward in alive.items():
            times[name].append(timed(args.device, forward, x)[1] * 1e3)
    for name, ms in times.items():
        out[name]["ms"] = round(statistics.median(ms), 3)
        out[name]["min_ms"] = round(min(ms), 3)
    return out


def load_1min() -> float | None:
    """The machine's 1-minute load average (None where unknown): far above `threads`, other
    work competed with the timing."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""


def print_table(rows: list[dict]) -> None:
    import pandas as pd

    cols = ["network", "coupling", "round_to", "scope", "macs_removed", "mode", "precision"]
    cols += ["layout", "batchnorm", "batch"]
    cols += ["dense_ms", "pruned_ms", "speedup", "speedup_min"]
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if df["error"].fillna("").astype(bool).any():
        cols.append("error")
    df = df[cols]
    try:
        import tabulate  # noqa: F401  (pandas' to_markdown needs it)

        print(df.to_markdown(index=False))
    except ImportError:
        print(df.to_string(index=False))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.freezing:
        inductor_config.freezing = True
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    print(f"sosp from {Path(sosp.__file__).parent}, torch {torch.__version__}", flush=True)
    torch.manual_seed(0)
    name, model, shape, classes = network(args.imagenet)
    model = model.to(args.device).eval()
    rows: list[dict] = []
    out = Path(args.out)
    rejected = []
    for options in variants(args):
        try:
            rows += time_variant(args, options, name, model, shape, classes, rows, out)
        except SospError as e:  # e.g. a round_to no layer of the network can keep
            print(f"sosp.prune rejected the settings {options}: {e}", flush=True)
            rejected.append(options)
    print(f"\n{name} on {device_name(args.device)}, torch {torch.__version__}; wrote {out}\n")
    if rows:
        print_table(rows)
    if rejected:
        sys.exit(f"{len(rejected)} of the pruned networks were rejected by sosp.prune (above)")


def time_variant(args, options: dict, name, model, shape, classes, rows, out) -> list[dict]:
    """Prune `model` with `options`, check the result, and time dense against pruned in every
    mode, precision and batch size; the rows so far (`rows` and these) are written to `out`
    after each one."""
    t0 = time.perf_counter()
    result = prune(args, options, model, shape, classes)
    print(f"pruned {name} by {args.method} {options} in {time.perf_counter() - t0:.1f} s")
    check = check_pruned(model, result, shape, classes, args.device, options["exclude"])
    pruned = result.model.eval()
    dense_counts = counting.count(model, shape)
    pruned_counts = counting.count(pruned, shape)
    print(
        f"MACs {dense_counts.macs:,} -> {pruned_counts.macs:,}, params "
        f"{dense_counts.params:,} -> {pruned_counts.params:,}, soft-mask rel diff {check}",
        flush=True,
    )
    common = {
        "network": name,
        "input_shape": "x".join(map(str, shape)),
        "device": torch.device(args.device).type,
        "device_name": device_name(args.device),
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": args.cudnn_benchmark,
        "torch": torch.__version__,
        "dense_macs": dense_counts.macs,
        "pruned_macs": pruned_counts.macs,
        "macs_removed": round(1 - pruned_counts.macs / dense_counts.macs, 4),
        "dense_params": dense_counts.params,
        "pruned_params": pruned_counts.params,
        "params_removed": round(1 - pruned_counts.params / dense_counts.params, 4),
        "method": args.method,
        "ratio": args.ratio,
        "budget": options["budget"],
        "exclude": options["exclude"],
        "n_samples": args.n_samples,
        "round_to": options["round_to"],
        "coupling": options["coupling"],
        "scope": options["scope"],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "check_rel_diff": f"{check:.1e}",
    }
    mine: list[dict] = []
    settings = itertools.product(args.modes, args.precisions, args.layouts, args.batchnorm)
    done = set()
    for mode, precision, layout, bn in settings:
        layout = layout_for(layout, precision)
        if (mode, precision, layout, bn) in done:  # auto and its layout named too
            continue
        done.add((mode, precision, layout, bn))
        try:
            forwards = {
                which: prepared(
                    m, mode, precision, layout, args.compile_mode, args.device, bn == "folded"
                )
                for which, m in (("dense", model), ("pruned", pruned))
            }
        except Exception as e:  # e.g. mode graph on a CPU
            error = f"{type(e).__name__}: {first_line(e)}"
            for batch in args.batch_sizes:
                setting = {"mode": mode, "precision": precision, "layout": layout}
                setting |= {"batchnorm": bn, "batch": batch}
                mine.append({**common, **setting, "error": error})
            atomic_write_csv(out, rows + mine, COLUMNS)
            print(mode, precision, layout, bn, error)
            continue
        for batch in args.batch_sizes:
            x = torch.randn(batch, *shape, device=args.device)
            x = x.contiguous(memory_format=memory_format(layout))
            with torch.inference_mode():
                got = time_forwards(forwards, x, classes, args)
            dense, small = got["dense"], got["pruned"]
            row = {
                **common,
                "mode": mode,
                "precision": precision,
                "layout": layout,
                "batchnorm": bn,
                "batch": batch,
                "compile_mode": args.compile_mode if mode == "compile" else None,
                "freezing": args.freezing if mode == "compile" else None,
                "dense_ms": dense.get("ms"),
                "pruned_ms": small.get("ms"),
                "speedup": speedup(dense.get("ms"), small.get("ms")),
                "dense_min_ms": dense.get("min_ms"),
                "pruned_min_ms": small.get("min_ms"),
                "speedup_min": speedup(dense.get("min_ms"), small.get("min_ms")),
                "dense_first_call_s": dense.get("first_s"),
                "pruned_first_call_s": small.get("first_s"),
                "load_1min": load_1min(),
                "error": "; ".join(e for e in (dense.get("error"), small.get("error")) if e),
            }
            mine.append(row)
            atomic_write_csv(out, rows + mine, COLUMNS)
            setting = {k: row[k] for k in ("mode", "precision", "layout", "batchnorm", "batch")}
            print(setting, end=" ", flush=True)
            print({k: row[k] for k in ("dense_ms", "pruned_ms", "speedup", "speedup_min", "error")})
        del forwards
        if mode == "compile":
            torch._dynamo.reset()
    return mine


def speedup(dense_ms: float | None, pruned_ms: float | None) -> float | None:
    if dense_ms is None or pruned_ms is None or not math.isfinite(pruned_ms) or pruned_ms <= 0:
        return None
    return round(dense_ms / pruned_ms, 3)


if __name__ == "__main__":
    main()
