"""`sosp train`, `sosp finetune` and `sosp evaluate`: the training side of the command line.

sosp train --model resnet20 --dataset digits --out runs/dense
sosp prune --model resnet20 --dataset digits --checkpoint runs/dense/model.pt ... --out runs/p
sosp finetune --pruned runs/p/pruned.pt --out runs/ft
sosp evaluate --checkpoint runs/ft/model.pt --out runs/ft/eval.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from sosp import api, counting, data, loaders, models, recipes, tracking
from sosp.cli import command, parse_options
from sosp.errors import BadInput
from sosp.io import atomic_save, atomic_write_json, load_checkpoint, read_json
from sosp.train import evaluate, fit

LOADERS = ("auto", "tensor", "torch")


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        help="preset: " + ", ".join(recipes.PRESETS) + " (default: the paper's for the "
        "model and dataset; fine-tuning repeats the training schedule)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override recipe keys, e.g. epochs=10 lr=0.05 milestones=5,8 bn_l1=1e-4",
    )
    p.add_argument("--recipe-file", help="YAML/JSON mapping of recipe keys to override")
    p.add_argument("--seed", type=int, default=0, help="initialization, data order, augmentation")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument(
        "--loader",
        default="auto",
        choices=LOADERS,
        help="tensor: the whole split on the device, batched crops and flips (fast path); "
        "torch: torchvision DataLoader (reference path); auto: tensor for digits/synthetic "
        "and for CIFAR on a GPU, else torch",
    )
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers (torch loader)")
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast and channels_last (default: on for CUDA)",
    )
    p.add_argument("--data-root", help="folder holding the datasets (default $SOSP_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is missing")
    p.add_argument(
        "--wandb", default="disabled", choices=tracking.MODES, help="W&B logging (optional)"
    )
    p.add_argument("--wandb-project", default="sosp")
    p.add_argument("--wandb-group", help="e.g. one per figure and method, so seeds aggregate")
    p.add_argument("--wandb-tags", nargs="*", default=[])
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--out",
        required=True,
        help="run folder: last.pt (every epoch), model.pt, metrics.json; re-running resumes",
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `sosp models`) or timm/<name>")
    p.add_argument("--dataset", help="dataset (default: the model's own)")
    _common_args(p)


def _finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pruned",
        nargs="+",
        required=True,
        help="pruned.pt from `sosp prune` (pruned at init for init-pruning, or after training); "
        "several are trained one after another into OUT/<folder of each pruned.pt>/",
    )
    _common_args(p)


@command("train", "train a zoo model from its seeded random initialization", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    dataset = args.dataset or models.spec(args.model).dataset
    meta = data.info(dataset)
    torch.manual_seed(args.seed)
    model = models.create(args.model, meta.num_classes, meta.in_channels, meta.image_size)
    source = {"command": "train", "model": args.model, "dataset": dataset}
    _run(args, model, source, {}, Path(args.out))
    return 0


@command("finetune", "train pruned networks (from `sosp prune`) further", _finetune_args)
def cmd_finetune(args: argparse.Namespace) -> int:
    outs = _finetune_outs(args.pruned, Path(args.out))
    summary = []
    for pruned, out in zip(args.pruned, outs, strict=True):
        ckpt = load_checkpoint(pruned)
        if "mask" not in ckpt:
            raise BadInput(f"{pruned} holds no mask: pass the pruned.pt written by `sosp prune`")
        source = {
            "command": "finetune",
            "model": ckpt["model"],
            "dataset": ckpt["dataset"],
            "pruned": str(Path(pruned).resolve()),
        }
        extra = {"mask": ckpt["mask"], "exclude": ckpt.get("exclude")}
        metrics = _run(args, api.model_from_file(ckpt, pruned), source, extra, out)
        summary.append({"pruned": str(pruned), "out": str(out), **_headline(metrics)})
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun only rank 0 writes
        atomic_write_json(Path(args.out) / "runs.json", summary)
    return 0


def _finetune_outs(pruned: list[str], out: Path) -> list[Path]:
    """OUT for one pruned network; OUT/<name of its folder> for each of several."""
    if len(pruned) == 1:
        return [out]
    names = [Path(p).parent.name for p in pruned]
    if len(set(names)) != len(names):
        raise BadInput("several --pruned files must lie in differently named folders")
    return [out / name for name in names]


def _headline(metrics: dict) -> dict:
    keys = ("final_test_acc", "best_test_acc_selected_on_test", "wall_seconds")
    return {k: metrics.get(k) for k in keys}


def _run(
    args: argparse.Namespace, model: torch.nn.Module, source: dict, extra: dict, out: Path
) -> dict:
    """Train `model` as `args` say into `out`; returns the metrics (empty on ranks > 0)."""
    meta = data.info(source["dataset"])
    preset = args.recipe or recipes.default_preset(source["model"], meta.name)
    recipe = recipes.resolve(preset, parse_options(args.set), args.recipe_file)
    rank, world, device = _distributed(args.device)
    amp = args.amp if args.amp is not None else torch.device(device).type == "cuda"
    kind = _loader_kind(args.loader, meta.name, device)
    train_batches, test_batches = _batches(args, meta, recipe, kind, device, rank, world)
    config = {
        **source,
        "recipe": recipe.as_dict(),
        "seed": args.seed,
        "loader": kind,
        "amp": amp,
        "world_size": world,
    }
    model = model.to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device != "cpu" else None
        )
    logger = _logger(args, source, config, out) if rank == 0 else None

    def save_model(net: torch.nn.Module, path: Path) -> None:
        file = api.model_file(source["model"], meta.name, net.float(), **extra)
        atomic_save(file, path)

    try:
        metrics = fit(
            model,
            recipe,
            train_batches,
            test_batches,
            out,
            config=config,
            save_model=save_model,
            seed=args.seed,
            device=device,
            amp=amp,
            logger=logger,
            progress=not args.no_progress and rank == 0,
            rank=rank,
        )
    finally:
        if logger is not None:
            logger.finish()
        if world > 1:
            torch.distributed.destroy_process_group()
    if rank == 0:
        best = metrics["best_test_acc_selected_on_test"]
        print(
            f"{source['command']} {source['model']} on {meta.name}: final test acc "
            f"{metrics['final_test_acc']:.4f} (best seen {best:.4f}), "
            f"{metrics['wall_seconds']:.0f} s. Wrote {out}/"
        )
    return metrics


def _distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process; under torchrun, joins the process group."""
    device = _resolve(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), world, device


def _resolve(device: str) -> str:
    """'auto' -> 'cuda' where a GPU is present, else 'cpu'; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _loader_kind(choice: str, dataset: str, device: str) -> str:
    if choice != "auto":
        return choice
    if dataset in ("digits", "synthetic"):
        return "tensor"
    on_gpu = torch.device(device).type == "cuda"
    return "tensor" if on_gpu and dataset in ("cifar10", "cifar100") else "torch"


def _batches(args, meta, recipe, kind, device, rank, world):
    """(train loader, test loader) of the chosen kind."""
    if kind == "tensor":
        made = []
        for split in ("train", "test"):
            x, y = data.tensors(meta.name, split, args.data_root, args.download)
            train = split == "train"
            made.append(
                loaders.TensorLoader(
                    x,
                    y,
                    meta,
                    recipe.batch_size if train else 500,
                    shuffle=train,
                    augment=train and recipe.augment,
                    device=device,
                    seed=args.seed,
                    rank=rank if train else 0,
                    world=world if train else 1,
                )
            )
        return tuple(made)
    pin = torch.device(device).type == "cuda"
    train_set = data.load(meta.name, "train", args.data_root, recipe.augment, args.download)
    test_set = data.load(meta.name, "test", args.data_root, False, args.download)
    common = {"seed": args.seed, "workers": args.workers, "pin_memory": pin}
    return (
        loaders.torch_loader(
            train_set, recipe.batch_size, shuffle=True, rank=rank, world=world, **common
        ),
        loaders.torch_loader(test_set, 500, shuffle=False, **common),
    )


def _logger(args, source: dict, config: dict, out: Path) -> tracking.Logger:
    return tracking.Logger(
        args.wandb,
        directory=out,
        project=args.wandb_project,
        group=args.wandb_group,
        job_type=source["command"],
        name=out.name,
        tags=args.wandb_tags,
        config=config,
    )


# --------------------------------------------------------------------------------------------


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help="model files written by sosp (model.pt, pruned.pt); for a fine-tuned one, its "
        "metrics.json and the pruned.pt and report.json it came from are read as well",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", help="folder holding the datasets (default $SOSP_DATA or ./data)")
    p.add_argument(
        "--record",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="fields to store with every result (e.g. experiment=fig1 method=sosp_h seed=1)",
    )
    p.add_argument("--out", help="write the results as a JSON list here (default: print only)")


@command("evaluate", "test accuracy, loss, params and MACs of saved networks", _evaluate_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    device = _resolve(args.device)
    extra = parse_options(args.record)
    test_sets: dict[str, object] = {}  # dataset name -> test batches, read once per call

    def test_batches(meta: data.DatasetInfo):
        if meta.name not in test_sets:
            test_sets[meta.name] = _test_batches(meta, args.data_root, args.batch_size)
        return test_sets[meta.name]

    records = [_evaluate_one(Path(c), extra, device, test_batches) for c in args.checkpoint]
    if args.out:
        atomic_write_json(args.out, records)
    for r in records:
        before = r.get("test_acc_before_finetune")
        note = "" if before is None else f" (before fine-tuning {before:.4f})"
        print(
            f"{r['checkpoint']}: test acc {r['test_acc']:.4f}{note}, "
            f"{r['params']:,} params, {r['macs']:,} MACs"
        )
    return 0


def _evaluate_one(path: Path, extra: dict, device: str, test_batches) -> dict:
    """The record of one model file: its test accuracy and counts, and where it was fine-tuned
    from a pruned network, that network's accuracy and the prune report."""
    ckpt = load_checkpoint(path)
    meta = data.info(ckpt["dataset"])
    batches = test_batches(meta)
    model = api.model_from_file(ckpt, path)
    result = evaluate(model.to(device), batches, device)
    record = {
        **extra,
        "model": ckpt["model"],
        "dataset": meta.name,
        "checkpoint": str(path),
        "test_acc": result["acc"],
        "test_loss": result["loss"],
        **counting.count(model.cpu(), meta.input_shape).as_dict(),
        "layer_pruned_fraction": _layer_fractions(ckpt, meta),
    }
    metrics_path = path.parent / "metrics.json"
    if metrics_path.is_file():
        metrics = read_json(metrics_path)
        record["best_test_acc_selected_on_test"] = metrics.get("best_test_acc_selected_on_test")
        record["train_seconds"] = metrics.get("wall_seconds")
        pruned = metrics.get("config", {}).get("pruned")
        if pruned:
            source = api.load_pruned(pruned).to(device)
            record["test_acc_before_finetune"] = evaluate(source, batches, device)["acc"]
            report = read_json(Path(pruned).parent / "report.json")
            record["prune"] = {k: v for k, v in report.items() if k not in ("model", "dataset")}
    return record


def _layer_fractions(ckpt: dict, meta: data.DatasetInfo) -> dict[str, float]:
    """Pruned fraction of each layer's output channels, from the mask and the dense model."""
    mask = ckpt.get("mask") or {}
    if not mask:
        return {}
    dense = models.create(ckpt["model"], meta.num_classes, meta.in_channels, meta.image_size)
    return {
        layer: len(channels) / dense.get_submodule(layer).weight.shape[0]
        for layer, channels in mask.items()
    }


def _test_batches(meta: data.DatasetInfo, root, batch_size: int):
    if meta.name == "imagenet":
        test = data.load(meta.name, "test", root, augment=False)
        return loaders.torch_loader(test, batch_size, shuffle=False, workers=4)
    x, y = data.tensors(meta.name, "test", root)
    return loaders.TensorLoader(x, y, meta, batch_size, shuffle=False, augment=False)
