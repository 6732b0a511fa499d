"""Which channel counts a device's convs reward: the time of one 3x3 conv as its output count
(input fixed at `--channels`) and its input count (output fixed) go from `--step` to
`--channels`. Flat stretches are channels that pruning removes for nothing; their width is the
`round_to` that fits the device.

    python benchmarks/channel_steps.py --threads 2                  # ResNet-56 stage 1 shape
    python benchmarks/channel_steps.py --device cuda --precision bf16 --layout nhwc \\
        --batch-size 256 --channels 64 --size 56 --step 4           # ResNet-50 stage 1 shape

Each conv (stride 1, padding 1, no bias) runs eagerly under `torch.inference_mode()` on a
[batch, in, size, size] input; the median of `--repeats` calls after `--warmup`, the device
synchronized around each. One CSV row per (varied side, in, out).
"""

from __future__ import annotations

import argparse

import latency  # benchmarks/latency.py, beside this file
import torch
from torch import nn

from sosp.io import atomic_write_csv
from sosp.latency import add_setup_arguments
from sosp.timing import median_ms

COLUMNS = ["device", "device_name", "threads", "torch", "precision", "layout", "batch"]
COLUMNS += ["size", "varied", "in_channels", "out_channels", "ms", "ms_per_full"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    add_setup_arguments(p)
    p.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    p.add_argument("--size", type=int, default=32, help="input height = width (default: 32)")
    p.add_argument("--channels", type=int, default=16, help="the full count (default: 16)")
    p.add_argument("--step", type=int, default=1, help="counts step by this (default: 1)")
    p.add_argument("--warmup", type=int, default=3, help="(default: 3)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls, median (default: 15)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument(
        "--out",
        help="CSV written (default: "
        "results/benchmarks/channel_steps_<device>_<precision>_<layout>.csv)",
    )
    args = p.parse_args(argv)
    if min(args.batch_size, args.size, args.channels, args.step, args.repeats) < 1:
        p.error("--batch-size, --size, --channels, --step and --repeats must be at least 1")
    if args.out is None:
        kind = torch.device(args.device).type
        args.out = f"results/benchmarks/channel_steps_{kind}_{args.precision}_{args.layout}.csv"
    return args


def conv_ms(cin: int, cout: int, args) -> float:
    """Median ms of one 3x3 conv cin -> cout on [batch, cin, size, size] as `args` say."""
    fmt = latency.memory_format(args.layout)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(args.device, memory_format=fmt)
    x = torch.randn(args.batch_size, cin, args.size, args.size, device=args.device)
    x = x.contiguous(memory_format=fmt)

    def call() -> torch.Tensor:
        with latency.autocast_for(args.device, args.precision):
            return conv(x)

    with torch.inference_mode():
        return median_ms(args.device, call, repeats=args.repeats, warmup=args.warmup)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {
        "device": torch.device(args.device).type,
        "device_name": latency.device_name(args.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": args.precision,
        "layout": args.layout,
        "batch": args.batch_size,
        "size": args.size,
    }
    full = args.channels
    counts = sorted({*range(args.step, full + 1, args.step), full})
    full_ms = conv_ms(full, full, args)
    rows = []
    for varied in ("out", "in"):
        print(f"{varied}put channels varied, the other {full}:")
        for c in counts:
            cin, cout = (full, c) if varied == "out" else (c, full)
            ms = full_ms if c == full else conv_ms(cin, cout, args)
            rows.append(
                {
                    **common,
                    "varied": varied,
                    "in_channels": cin,
                    "out_channels": cout,
                    "ms": round(ms, 4),
                    "ms_per_full": round(ms / full_ms, 3),
                }
            )
            print(f"  {cin:4d} -> {cout:4d}: {ms:8.3f} ms ({ms / full_ms:.2f} of full)", flush=True)
    atomic_write_csv(args.out, rows, COLUMNS)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
