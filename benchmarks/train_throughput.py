"""Training throughput of ResNet-56 on CIFAR-shaped data: the device-resident fast path
(`TensorLoader`: data on the device, batched crops and flips) against the reference path
(torchvision CIFAR10 dataset and transforms through a DataLoader), and on CUDA a third path,
the device-resident loader with the training step captured as a CUDA graph (`GraphedStep`,
what `sosp train --cuda-graph` runs). With `--imagenet`: ResNet-50 at 224 px on real JPEGs,
decoded on the device (`JpegLoader`, `--loader jpeg`) against PIL in DataLoader workers
(`--loader torch`), each also without the model (the loader's own images/s). `--compile MODE
...` adds the device-resident (CIFAR) or device-decoded (ImageNet) path with the model under
`torch.compile` in each mode.

    python benchmarks/train_throughput.py                   # this CPU
    python benchmarks/train_throughput.py --device cuda     # bf16 + channels_last on the GPU
    python benchmarks/train_throughput.py --device cuda --compile default reduce-overhead
    python benchmarks/train_throughput.py --device cuda --imagenet --workers 16

Runs on data written in the real on-disk format (no download): a random CIFAR-10 in its pickled
batches; for --imagenet, `--images` JPEGs of 300-500 px a side (ImageNet's typical sizes,
quality 90) in 10 class folders, read epoch after epoch, so the loaders decode and augment as
on the real data. Prints
and writes one CSV row per path: images per second over `--steps` SGD steps after `--warmup`
steps (for the CUDA graph at least its warm-up steps and the capture, so every timed step is a
replay).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from sosp import data, loaders, models, recipes
from sosp.graphed_step import GraphedStep
from sosp.io import atomic_write_csv
from sosp.jpeg_loader import JpegLoader
from sosp.timing import synchronize
from sosp.train import optimizer_for, step_function

TENSOR = "tensor (device-resident)"
GRAPH = f"{TENSOR} + CUDA graph"
COMPILE = "torch.compile "


def endless(batches):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from batches


def images_per_second(model, batches, recipe, device, amp, steps, warmup, cuda_graph) -> float:
    opt = optimizer_for(model, recipe)
    step = step_function(model, opt, recipe, device, amp, cuda_graph)
    model.train()
    it = endless(batches)
    for _ in range(warmup):
        step(*next(it))
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        step(x, y)
        seen += len(y)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def compiled_if_named(model, path: str, warmup: int) -> tuple[torch.nn.Module, int]:
    """(the model under torch.compile in the mode the path names, at least 3 warm-up steps
    for compiling and a recompile), or (the model, `warmup`) for a path without it."""
    if COMPILE not in path:
        return model, warmup
    mode = path.rsplit(COMPILE, 1)[1].strip("()")
    return torch.compile(model, mode=mode), max(warmup, 3)


def loader_images_per_second(batches, steps: int, warmup: int, device: str) -> float:
    """Images per second the loader alone yields (no model), over `steps` batches."""
    it = endless(batches)
    for _ in range(warmup):
        next(it)
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        _, y = next(it)
        seen += len(y)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def imagenet_paths(args, root: str, amp: bool) -> dict:
    """name -> (a fresh loader factory over `--images` JPEGs written under `root`, whether the
    step is a CUDA graph)."""
    per_class = args.images // 10
    data.write_jpeg_folder(root, "imagenette", 10, (per_class, 1), sizes=(300, 500))
    meta = data.info("imagenette")

    def jpeg():
        return JpegLoader(
            data.files("imagenette", "train", root),
            meta,
            args.batch_size,
            shuffle=True,
            augment=True,
            device=args.device,
            workers=args.workers,
        )

    paths = {f"jpeg, decoded on the device ({args.workers} workers read)": (jpeg, False)}
    if amp:
        paths[f"jpeg, decoded on the device ({args.workers} workers read) + CUDA graph"] = (
            jpeg,
            True,
        )
    for mode in args.compile or []:
        paths[f"jpeg, decoded on the device ({args.workers} workers read) + {COMPILE}({mode})"] = (
            jpeg,
            False,
        )
    paths[f"torch DataLoader, PIL ({args.workers} workers)"] = (
        lambda: loaders.torch_loader(
            data.load("imagenette", "train", root, augment=True),
            args.batch_size,
            shuffle=True,
            workers=args.workers,
            pin_memory=amp,
        ),
        False,
    )
    return paths


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
    p.add_argument("--imagenet", action="store_true", help="ResNet-50, JPEGs at 224 px")
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="torch.backends.cudnn.benchmark = True (cuDNN times its algorithms per shape)",
    )
    p.add_argument(
        "--compile",
        nargs="*",
        metavar="MODE",
        help="also time the device-resident path with the model under torch.compile in each "
        "MODE (e.g. default, max-autotune-no-cudagraphs, reduce-overhead: CUDA graphs); "
        "with --imagenet the device-decoded JPEG path",
    )
    args = p.parse_args()
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.imagenet:
        imagenet(args)
        return

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
            TENSOR: loaders.TensorLoader(
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
        for mode in args.compile or []:  # the device-resident loader, the model compiled
            paths[f"{TENSOR} + {COMPILE}({mode})"] = loaders.TensorLoader(
                x, y, meta, args.batch_size, shuffle=True, augment=True, device=args.device
            )
        alone = loader_images_per_second(paths[TENSOR], args.steps, args.warmup, args.device)
        for name, batches in paths.items():
            graphed = name == GRAPH
            warmup = graph_warmup if graphed else args.warmup
            torch.manual_seed(0)
            model = models.create(args.model, 10, 3, 32).to(args.device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            model, warmup = compiled_if_named(model, name, warmup)
            ips = images_per_second(
                model, batches, recipe, args.device, amp, args.steps, warmup, graphed
            )
            row = {
                "model": args.model,
                "path": name,
                "images_per_second": round(ips, 1),
                "loader_alone_images_per_second": round(alone, 1) if name == TENSOR else None,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": warmup,
                "cuda_graph": graphed,
                **machine(amp),
            }
            rows.append(row)
            print(row, flush=True)
    atomic_write_csv(f"{args.out}_{'cuda' if amp else 'cpu'}.csv", rows)


def imagenet(args) -> None:
    """ResNet-50 training images/s through each JPEG path, and each loader's own images/s."""
    amp = args.device.startswith("cuda")
    recipe = recipes.resolve("imagenet", {"batch_size": args.batch_size})
    assert args.batch_size <= args.images // 10 * 10, "write at least --batch-size --images"
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, (make, graphed) in imagenet_paths(args, root, amp).items():
            torch.manual_seed(0)
            model = models.create("resnet50", 10, 3, 224).to(args.device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            warmup = max(args.warmup, GraphedStep.WARMUP + 1) if graphed else args.warmup
            model, warmup = compiled_if_named(model, name, warmup)
            train = images_per_second(
                model, make(), recipe, args.device, amp, args.steps, warmup, graphed
            )
            alone = loader_images_per_second(make(), args.steps, args.warmup, args.device)
            row = {
                "model": "resnet50",
                "path": name,
                "images_per_second": round(train, 1),
                "loader_alone_images_per_second": round(alone, 1),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": warmup,
                "workers": args.workers,
                "cuda_graph": graphed,
                "cudnn_benchmark": args.cudnn_benchmark,
                **machine(amp),
            }
            rows.append(row)
            print(row, flush=True)
    atomic_write_csv(f"{args.out}_imagenet_{'cuda' if amp else 'cpu'}.csv", rows)


def machine(amp: bool) -> dict:
    """The fields of every row that say what it ran on."""
    return {
        "device": torch.cuda.get_device_name() if amp else "cpu",
        "bf16_channels_last": amp,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    main()
