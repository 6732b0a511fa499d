"""How fast each way of adding a pruned branch into its wider residual stream is, against the
dense network's plain add: the cost that per-filter structures pay in every pruned block.

    python benchmarks/index_add.py                      # CPU: ResNet-56's streams, fp32
    python benchmarks/index_add.py --device cuda        # GPU: ResNet-50's streams, bf16

The stream [B, C, H, W] and the branch [B, k, H, W] (k of the C channels kept, at sorted random
positions) are stored as `--layouts`; each way is checked against `index_add` and timed as the
median of `--repeats` calls (the GPU synchronized around each), one CSV row per (shape,
layout, way) with the device's name and the largest difference to IndexAdd's result (nan: the
result came out in the other layout):

    add               stream + a full-width branch: what the dense network does (the floor)
    index_add         stream.clone().index_add_(1, positions, branch) (IndexAdd off the CPU,
                      where the stream is read after the sum or autograd is on)
    index_add_into    stream.index_add_(1, positions, branch): IndexAdd with `overwrite`
                      (nothing reads the stream after the sum) under no_grad
    gather_copy       stream.clone().index_copy_(1, positions, stream[:, positions] + branch):
                      no atomics, positions being distinct
    scatter_add       one scatter_add over the [pixels, channels] view of a clone of a
                      channels_last stream (IndexAdd on a CPU channels_last stream until
                      2026-11); NHWC only
    matmul            addmm(stream, branch, P), P the k x C 0/1 placement matrix, over the
                      [pixels, channels] views (IndexAdd on a CPU channels_last stream); NHWC
                      only (exact but for 0 * inf)
    matmul_into       the same added into the stream (addmm_), as with `overwrite`; NHWC only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sosp.io import atomic_write_csv
from sosp.shortcuts import IndexAdd, from_pixel_rows, pixel_rows, placement
from sosp.timing import median_ms

# (C, k, H) of the streams: ResNet-56 at batch 64 (CPU), ResNet-50 at batch 256 (GPU); k is
# what a 50%-MAC SOSP-H mask keeps there.
SHAPES = {
    "cpu": (64, [(16, 13, 32), (32, 20, 16), (64, 21, 8)]),
    "cuda": (256, [(256, 248, 56), (512, 384, 28), (1024, 648, 14), (2048, 744, 7)]),
}


def ways(positions: torch.Tensor, channels: int, nhwc: bool) -> dict:
    """name -> fn(stream, branch, full) of every way that applies to the layout."""
    out = {
        "add": lambda s, b, full: s + full,
        "index_add": lambda s, b, full: s.clone().index_add_(1, positions, b),
        "index_add_into": lambda s, b, full: s.index_add_(1, positions, b),
        "gather_copy": lambda s, b, full: s.clone().index_copy_(
            1, positions, s.index_select(1, positions) + b
        ),
    }
    if nhwc:
        onehot = placement(positions.tolist(), channels).to(positions.device)

        def scatter_add(s, b, full):
            out = s.clone()
            view = pixel_rows(out)
            view.scatter_add_(1, positions.expand(len(view), -1), pixel_rows(b))
            return out

        def matmul(s, b, full):
            rows = torch.addmm(pixel_rows(s), pixel_rows(b), onehot.to(b.dtype))
            return from_pixel_rows(rows, s.shape, channels)

        def matmul_into(s, b, full):
            pixel_rows(s).addmm_(pixel_rows(b), onehot.to(b.dtype))
            return s

        out |= {"scatter_add": scatter_add, "matmul": matmul, "matmul_into": matmul_into}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--layouts", nargs="+", choices=("nchw", "nhwc"), default=["nchw", "nhwc"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="batch 2, 3 repeats: a smoke test")
    p.add_argument("--out", default="results/benchmarks/index_add_<device>.csv")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = torch.device(args.device).type
    if kind == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    batch, shapes = SHAPES["cuda" if kind == "cuda" else "cpu"]
    dtype = torch.bfloat16 if kind == "cuda" else torch.float32
    if args.quick:
        batch, args.repeats = 2, 3
    name = torch.cuda.get_device_name() if kind == "cuda" else "cpu"
    g = torch.Generator().manual_seed(0)
    rows = []
    for channels, kept, size in shapes:
        positions = torch.randperm(channels, generator=g)[:kept].sort().values.to(args.device)
        for layout in args.layouts:
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            stream, branch, full = (
                torch.randn(batch, c, size, size, generator=g, dtype=dtype)
                .to(args.device)
                .contiguous(memory_format=fmt)
                for c in (channels, kept, channels)
            )
            index_add = IndexAdd(positions.tolist(), channels).to(args.device)
            for way, fn in ways(positions, channels, layout == "nhwc").items():
                diff = None
                if way != "add":  # the same values as IndexAdd's, in the same layout
                    want = index_add(stream, branch)  # the ways "_into" change the stream
                    got = fn(stream.clone(), branch, full)  # some add into the stream
                    diff = float((got.float() - want.float()).abs().max())
                    if not got.is_contiguous(memory_format=fmt):
                        diff = float("nan")
                ms = median_ms(kind, fn, stream, branch, full, repeats=args.repeats)
                row = {
                    "device": name,
                    "dtype": str(dtype).removeprefix("torch."),
                    "shape": f"{batch}x{channels}x{size}x{size}",
                    "kept": kept,
                    "layout": layout,
                    "way": way,
                    "ms": round(ms, 4),
                    "max_abs_diff": diff,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }
                rows.append(row)
                print(row, flush=True)
    out = Path(args.out.replace("<device>", kind))
    atomic_write_csv(out, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
