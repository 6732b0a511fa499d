"""Training throughput of ResNet-56 on CIFAR-shaped data: the device-resident fast path
(`TensorLoader`: data on the device, batched crops and flips) against the reference path
(torchvision CIFAR10 dataset and transforms through a DataLoader), and on CUDA a third path,
the device-resident loader with the training step captured as a CUDA graph (`GraphedStep`,
what `sosp train --cuda-graph` runs).

    python benchmarks/train_throughput.py                   # this CPU
    python benchmarks/train_throughput.py --device cuda     # bf16 + channels_last on the GPU

Runs on a random CIFAR-10 written in the real pickled format (no download), so the DataLoader
path decodes and augments exactly as it would on the real data. Prints and writes one CSV row
per path: images per second over `--steps` SGD steps after `--warmup` steps (for the CUDA
graph at least its warm-up steps and the capture, so every timed step is a replay).
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import torch

from sosp import data, loaders, models, recipes
from sosp.graphed_step import GraphedStep
from sosp.train import optimizer_for, step_function

GRAPH = "tensor (device-resident) + CUDA graph"


def images_per_second(model, batches, recipe, device, amp, steps, warmup, cuda_graph) -> float:
    opt = optimizer_for(model, recipe)
    step = step_function(model, opt, recipe, device, amp, cuda_graph)
    model.train()
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        seen += len(y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet56")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference path)")
    p.add_argument("--images", type=int, default=10_000, help="training images written")
    p.add_argument("--out", default="results/benchmarks/train_throughput")
    args = p.parse_args()

    meta = data.info("cifar10")
    recipe = recipes.resolve("cifar", {"batch_size": args.batch_size})
    amp = args.device.startswith("cuda")
    per_batch = args.images // 5
    graph_warmup = max(args.warmup, GraphedStep.WARMUP + 1)  # warm-up steps and the capture
    longest = graph_warmup if amp else args.warmup
    assert args.batch_size * (args.steps + longest) <= args.images, "write more --images"
    rows = []
    with tempfile.TemporaryDirectory() as root:
        data.write_fake_cifar10(root, per_batch=per_batch)
        x, y = data.tensors("cifar10", "train", root)
        paths = {
            "tensor (device-resident)": loaders.TensorLoader(
                x, y, meta, args.batch_size, shuffle=True, augment=True, device=args.device
            ),
            f"torch DataLoader ({args.workers} workers)": loaders.torch_loader(
                data.load("cifar10", "train", root, augment=True),
                args.batch_size,
                shuffle=True,
                workers=args.workers,
                pin_memory=amp,
            ),
        }
        if args.device.startswith("cuda"):  # a fresh loader over the same images
            paths[GRAPH] = loaders.TensorLoader(
                x, y, meta, args.batch_size, shuffle=True, augment=True, device=args.device
            )
        for name, batches in paths.items():
            graphed = name == GRAPH
            warmup = graph_warmup if graphed else args.warmup
            torch.manual_seed(0)
            model = models.create(args.model, 10, 3, 32).to(args.device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            ips = images_per_second(
                model, batches, recipe, args.device, amp, args.steps, warmup, graphed
            )
            row = {
                "model": args.model,
                "path": name,
                "images_per_second": round(ips, 1),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": warmup,
                "cuda_graph": graphed,
                "device": torch.cuda.get_device_name() if amp else "cpu",
                "bf16_channels_last": amp,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(row, flush=True)
    out = Path(f"{args.out}_{'cuda' if amp else 'cpu'}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
