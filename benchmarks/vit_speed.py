"""Speed-up of timm vision transformers pruned to fewer MACs, measured on this device.

    python benchmarks/vit_speed.py                                  # DeiT-tiny, 224 px, CPU
    python benchmarks/vit_speed.py --models deit_tiny_patch16_224 vit_small_patch16_224 \\
        --ratios 0.3 0.5 --methods sosp_h magnitude --device cuda

Random weights (the saliencies of N' random samples; timing does not depend on the values).
Each model is pruned by each method with `budget="macs"` at each ratio (global ranking, filter
coupling: heads, MLP hidden units, attention output rows, patch-embedding filters), then the
dense and the pruned network run in eval mode under inference mode on a batch of
`--batch-size` random images, timed as the best of two medians of `--repeats` calls,
interleaved. One CSV row per
(model, method, ratio) with the device's name and thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import sosp
from sosp.io import atomic_write_csv
from sosp.latency import device_name


def median_ms(net: torch.nn.Module, x: torch.Tensor, repeats: int, device: str) -> float:
    with torch.inference_mode():
        net(x)
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224"])
    p.add_argument("--methods", nargs="+", default=["sosp_h", "sosp_i"])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/benchmarks/vit_speed_cpu.csv")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm

    rows = []
    shape = (3, args.image_size, args.image_size)
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=1000, img_size=args.image_size)
        model = model.to(args.device).eval()
        g = torch.Generator().manual_seed(0)
        data = [(torch.randn(args.n_samples, *shape, generator=g).to(args.device),
                 torch.randint(1000, (args.n_samples,), generator=g).to(args.device))]  # fmt: skip
        x = torch.randn(args.batch_size, *shape, device=args.device)
        for method in args.methods:
            options = {"label_samples": 1} if method == "sosp_i" else {}
            results = sosp.prune_ratios(
                model, method, args.ratios, data, n_samples=args.n_samples, budget="macs",
                **options,
            )  # fmt: skip
            for ratio, r in zip(args.ratios, results, strict=True):
                small = r.model.eval()
                runs = [median_ms(net, x, args.repeats, args.device) for net in (model, small) * 2]
                dense, pruned = min(runs[0::2]), min(runs[1::2])
                before, after = r.report["before"], r.report["after"]
                row = {
                    "model": name,
                    "method": method,
                    "ratio": ratio,
                    "macs_removed": round(1 - after["macs"] / before["macs"], 3),
                    "params_removed": round(1 - after["params"] / before["params"], 3),
                    "dense_ms": round(dense, 1),
                    "pruned_ms": round(pruned, 1),
                    "speedup": round(dense / pruned, 2),
                    "batch": args.batch_size,
                    "image_size": args.image_size,
                    "device": device_name(args.device),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }  # fmt: skip
                rows.append(row)
                print(row, flush=True)
    atomic_write_csv(args.out, rows)


if __name__ == "__main__":
    main()
