"""Time of SOSP-I's greedy order (Eq. 4, `sosp.selection.greedy_order`) against the number
of structures S (ResNet-50 has 22,720).

    python benchmarks/greedy_time.py                          # S = 1000, 5000, 22720 on the CPU
    python benchmarks/greedy_time.py --device cuda --sizes 22720
    python benchmarks/greedy_time.py --threads 1
    python benchmarks/greedy_time.py --scaled                 # with kernel-scaling factors

Q [S, S] is random like the library's (float32, Q = |G|/2 + diag|lambda|, so nonnegative):
G = A + A^T from a standard normal A, about 50 layers of random sizes, each capped at its size
minus one (the whole order, S - layers steps); `--scaled` passes a factor per layer (1/k for
a random kernel area k in 1..9, as kernel scaling does). Each size is timed as the best of
`--repeats` calls (the GPU synchronized around each); one CSV row per size with the device's
name, the torch version and a hash of the order (equal hashes: the same order, to compare
versions).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

import sosp
from sosp.io import atomic_write_csv
from sosp.latency import device_name
from sosp.selection import greedy_order
from sosp.timing import timed


def random_problem(
    size: int, layers: int, seed: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [S, S] float32 on `device`, layer_of [S], caps [L]): ~`layers` layers of random
    sizes (at least 2 structures each), each capped at its size - 1."""
    g = torch.Generator().manual_seed(seed)
    layers = max(1, min(layers, size // 2))
    cuts = torch.randperm(size // 2 - 1, generator=g)[: layers - 1].sort().values + 1
    bounds = [0, *(2 * cuts).tolist(), size]
    sizes = [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
    layer_of = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    caps = torch.tensor(sizes) - 1
    q = torch.randn(size, size, generator=g)
    q = q + q.T  # symmetric
    q.abs_().mul_(0.5)
    q.diagonal().add_(torch.randn(size, generator=g).abs())
    return q.to(device), layer_of, caps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 22720])
    p.add_argument("--layers", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--scaled", action="store_true", help="a scale factor per layer")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="CSV (default results/benchmarks/greedy_time_<device>.csv)")
    args = p.parse_args()
    print(f"sosp from {Path(sosp.__file__).parent}, torch {torch.__version__}", flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_type = torch.device(args.device).type
    out = Path(args.out or f"results/benchmarks/greedy_time_{device_type}.csv")
    rows = []
    for size in args.sizes:
        q, layer_of, caps = random_problem(size, args.layers, args.seed, args.device)
        scale = None
        if args.scaled:
            g = torch.Generator().manual_seed(args.seed)
            scale = 1 / torch.randint(1, 10, (len(caps),), generator=g).double()[layer_of]
        seconds = []
        for _ in range(args.repeats):
            order, sec = timed(args.device, greedy_order, q, layer_of, caps, scale)
            seconds.append(sec)
        row = {
            "structures": size,
            "layers": len(caps),
            "steps": len(order),
            "scaled": args.scaled,
            "seconds": round(min(seconds), 4),
            "seconds_all": " ".join(f"{s:.4f}" for s in seconds),
            "order_sha1": hashlib.sha1(str(order).encode()).hexdigest()[:12],
            "seed": args.seed,
            "device": device_name(args.device),
            "torch": torch.__version__,
        }
        rows.append(row)
        print(row, flush=True)
        del q
    atomic_write_csv(out, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
