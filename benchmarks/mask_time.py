"""Mask-computation time of SOSP-H and SOSP-I against one forward+backward pass (T_fb).

    python benchmarks/mask_time.py                       # ResNet-56, N'=1000, CPU
    python benchmarks/mask_time.py --widths 1 2 3 4      # the paper's Fig. 2 sweep
    python benchmarks/mask_time.py --device cuda
    python benchmarks/mask_time.py --imagenet --n-samples 200 --label-samples 1   # ResNet-50
    python benchmarks/mask_time.py --widths 1 4 --n-samples 200 --batch-size 50 --count-ops \
        --image-size 8 --out results/benchmarks/mask_ops_resnet56_cpu      # operator calls
    python benchmarks/mask_time.py ... --code $(git rev-parse --short HEAD) --append  # beside
        # the rows of other code measured by the same command

Start-up is reported apart: `device_startup_seconds` (the first operation on the device: on
CUDA its context, seconds) and `first_call_seconds` (the first `sosp.prune` of each width and
method, paying what a process pays once: lazy imports, the first tracing, cuDNN's choices);
`seconds` and `s_<step>` come from a second call, as `t_fb` from warm passes.

Synthetic inputs (timing does not depend on the pixel values): CIFAR-sized for the CIFAR
ResNet, 224x224 with 1000 classes for `--imagenet` (torchvision's ResNet-50). Writes one CSV
row per (width, method) with the device's name and the seconds of each step of the mask
(tracing, saliency, selection, surgery, counting) and, with several widths, a PNG of mask
time vs width.

`--count-ops` adds the ATen operator calls (`sosp.op_count`; on a GPU roughly one kernel launch
each) of T_fb (one forward+backward over the same batches), of each step of the mask
(`ops_<step>`) and of the whole `sosp.prune` call (`ops_total`, the steps and what lies between
them), from a second, counted run of each: the seconds still come from the uncounted runs,
since counting slows a run. The counts do not depend on the spatial size (`--image-size`). No
PNG with `--count-ops`.
"""

from __future__ import annotations

import argparse
import functools
import platform
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import sosp
from sosp import counting, data, models
from sosp.io import atomic_write_csv
from sosp.latency import device_name
from sosp.models.cifar_resnet import CifarResNet
from sosp.op_count import OpCounter, count_steps
from sosp.timing import timed


def forward_backward(model, batches) -> None:
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--depth", type=int, default=56)
    p.add_argument("--widths", type=int, nargs="+", default=[1])
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--methods", nargs="+", default=["sosp_h", "sosp_i"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--imagenet", action="store_true", help="torchvision ResNet-50 at 224 px")
    p.add_argument("--label-samples", type=int, help="SOSP-I: labels sampled per input")
    p.add_argument("--image-size", type=int, help="input side (default 32; 224 with --imagenet)")
    p.add_argument("--count-ops", action="store_true", help="also count operator calls")
    p.add_argument("--code", help="a `code` column naming what was measured (e.g. a commit)")
    p.add_argument(
        "--append", action="store_true", help="keep the CSV's rows of other `code`s, add these"
    )
    p.add_argument("--out", default="results/benchmarks/mask_time")
    args = p.parse_args()

    torch.manual_seed(0)
    rows = []
    widths = [1] if args.imagenet else args.widths
    for width in widths:
        model, shape, classes = network(args, width)
        model = model.to(args.device).eval()
        ds = data.synthetic(args.n_samples, shape, classes)
        batches = [
            (x.to(args.device), y.to(args.device))
            for x, y in torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
        ]
        startup = timed(args.device, device_startup, args.device)[1] if width == widths[0] else 0.0
        forward_backward(model, batches[:1])  # warm-up
        t_fb = min(timed(args.device, forward_backward, model, batches)[1] for _ in range(2))
        if args.count_ops:
            with OpCounter() as fb_ops:
                forward_backward(model, batches)
        params = counting.count_params(model)
        for method in args.methods:
            options = {"label_samples": args.label_samples} if method == "sosp_i" else {}
            mask = functools.partial(
                sosp.prune,
                model,
                method,
                0.5,
                batches,
                exclude="resnet_downsample",
                n_samples=args.n_samples,
                recalibrate_bn=False,  # the mask alone, as on a trained network
                **{k: v for k, v in options.items() if v},
            )
            first = mask()  # pays this process's first tracing, autotuning, lazy imports
            r = mask()
            sec = r.report["seconds"]
            row = {
                "model": "resnet50" if args.imagenet else f"resnet{args.depth}",
                "width": width,
                "params": params,
                "method": method,
                "structures": r.report["structures"],
                "n_samples": args.n_samples,
                "input": "x".join(map(str, shape)),
                "seconds": round(sec, 3),
                "t_fb": round(t_fb, 3),
                "ratio_to_t_fb": round(sec / t_fb, 2),
                "first_call_seconds": round(first.report["seconds"], 3),
                "device_startup_seconds": round(startup, 3),
                **{f"s_{k}": v for k, v in r.report["seconds_by_step"].items()},
                "label_samples": options.get("label_samples"),
                "device": device_name(args.device),
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
            }
            if args.count_ops:
                with count_steps(), OpCounter() as total:
                    counted = mask()
                row |= {
                    "ops_t_fb": fb_ops.total,
                    **{f"ops_{k}": v for k, v in counted.report["ops_by_step"].items()},
                    "ops_total": total.total,
                    "ops_ratio_to_t_fb": round(total.total / fb_ops.total, 2),
                }
            rows.append(row)
            print(row, flush=True)
    out = Path(args.out)
    if args.code is not None:
        rows = [{"code": args.code, **r} for r in rows]
    if args.append and out.with_suffix(".csv").exists():
        kept = pd.read_csv(out.with_suffix(".csv"), keep_default_na=False)
        if "code" in kept:
            kept = kept[kept["code"] != args.code]
        rows = pd.concat([kept, pd.DataFrame(rows)]).astype(object).fillna("").to_dict("records")
    atomic_write_csv(out.with_suffix(".csv"), rows)
    if len(args.widths) > 1 and not args.count_ops:
        plot(rows, out.with_suffix(".png"))


def device_startup(device: str) -> None:
    """The device's start-up (on CUDA its context), paid by the first operation on it."""
    torch.ones(1, device=device).add_(1)


def network(args, width: int) -> tuple[torch.nn.Module, tuple[int, ...], int]:
    """(model, input shape, classes) of the benchmark."""
    if args.imagenet:
        size = args.image_size or 224
        return models.create("resnet50", 1000, 3, size), (3, size, size), 1000
    size = args.image_size or 32
    return CifarResNet(args.depth, 10, width=16 * width, image_size=size), (3, size, size), 10


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for method in sorted({r["method"] for r in rows}):
        sel = [r for r in rows if r["method"] == method]
        ax.plot(
            [r["width"] for r in sel],
            [r["seconds"] for r in sel],
            "o-",
            label=method.upper().replace("_", "-"),
        )
    ax.set_xticks(sorted({r["width"] for r in rows}))
    ax.set_xlabel("width multiplier of ResNet-56")
    ax.set_ylabel("mask computation time (s)")
    ax.set_title(f"N'={rows[0]['n_samples']}, {rows[0]['device']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
