"""`sosp train` and `sosp finetune`: train a zoo model from its seeded initialization, or
pruned networks further, by a recipe, resuming where a run stopped.

sosp train --model resnet20 --dataset digits --out runs/dense
sosp finetune --pruned runs/p/pruned.pt --out runs/ft
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from sosp import counting, data, loaders, methods, paths, recipes, tracking
from sosp.commands import sparse
from sosp.commands.base import (
    AT_LEAST_ONE,
    FRACTION,
    NOT_NEGATIVE,
    POSITIVE,
    Command,
    add_data_root,
    add_dataset,
    add_device,
    add_download,
    add_model,
    add_no_progress,
    add_wandb,
    check_bounds,
    check_out_folder,
    model_for,
    open_run,
    parse_options,
    parse_widths,
    resolve_device,
    show_progress,
    warn_unmatched_exclusions,
)
from sosp.curvature import first_samples
from sosp.errors import BadInput
from sosp.flow_probe import FlowProbe
from sosp.graphed_step import check_supported
from sosp.io import atomic_write_json
from sosp.jpeg_loader import JpegLoader
from sosp.rounds import RoundPruner, RoundsPlan
from sosp.settings import PruneSettings
from sosp.train import fit

LOADERS = ("auto", "tensor", "torch", "jpeg")
HEADLINE = ("final_test_acc", "best_test_acc_selected_on_test", "wall_seconds")
SUMMARY = ("final_test_acc", "final_test_loss", "best_test_acc_selected_on_test", "wall_seconds")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p)
    _add_run_arguments(p)
    _add_during_training_arguments(p)
    sparse.add_training_arguments(p)


def _add_during_training_arguments(p: argparse.ArgumentParser) -> None:
    rounds = p.add_argument_group(
        "pruning during training, in rounds (Lubana & Dick; the run ends physically pruned)"
    )
    rounds.add_argument(
        "--prune-method", help="prune during training by this method (see `sosp prune --help`)"
    )
    rounds.add_argument(
        "--prune-ratio", type=float, help="fraction of the budget (filters) removed in all"
    )
    rounds.add_argument("--prune-rounds", type=int, default=1, help="rounds (default: 1)")
    rounds.add_argument(
        "--prune-start", type=int, default=1, help="the first round after this epoch (default: 1)"
    )
    rounds.add_argument(
        "--prune-every", type=int, default=1, help="epochs between rounds (default: 1)"
    )
    rounds.add_argument(
        "--prune-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="prune settings (n_samples, budget, max_layer_fraction, exclude, scope, ...: see "
        "`sosp prune --help`) and the method's options, e.g. n_samples=2560 temperature=200",
    )
    probe = p.add_argument_group("gradient-flow measurements during training (flow.json)")
    probe.add_argument(
        "--probe-epochs",
        nargs="*",
        type=int,
        default=[],
        metavar="EPOCH",
        help="measure theta.g, theta.Hg, magnitudes and their correlations after these epochs "
        "(0: at initialization); the early-bird mask distance is recorded every epoch",
    )
    probe.add_argument("--probe-samples", type=int, default=1000, help="N' (default: 1000)")
    probe.add_argument(
        "--probe-temperature", type=float, default=1.0, help="logits / T (default: 1)"
    )
    p.add_argument(
        "--sample-batch-size",
        type=int,
        default=128,
        help="batch size of the samples the rounds and measurements use (default: 128)",
    )


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pruned",
        nargs="+",
        required=True,
        help=f"{paths.PRUNED} from `sosp prune` (pruned at init for init-pruning, or after "
        "training); several are trained one after another into OUT/<folder of each>/",
    )
    _add_run_arguments(p)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
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
    add_device(p)
    p.add_argument(
        "--loader",
        default="auto",
        choices=LOADERS,
        help="tensor: the whole split on the device, batched crops and flips (fast path for "
        "small datasets); jpeg: workers read image files, the device decodes each batch "
        "(nvJPEG on a GPU) and crops, resizes and flips it (fast path for ImageNet); torch: "
        "torchvision DataLoader with PIL (reference path); auto: tensor for digits/synthetic "
        "and for CIFAR on a GPU, jpeg for image files on a GPU, else torch",
    )
    p.add_argument(
        "--workers", type=int, default=4, help="DataLoader workers (torch and jpeg loaders)"
    )
    p.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast and channels_last (default: on for CUDA)",
    )
    p.add_argument(
        "--cuda-graph",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="capture the training step once as a CUDA graph and replay it per batch (the same "
        "SGD updates; fewer kernel launches at small batches). CUDA and one process only. "
        "Default off until measured on a GPU: compare with benchmarks/train_throughput.py "
        "--device cuda",
    )
    add_data_root(p)
    add_download(p)
    add_wandb(p)
    add_no_progress(p)
    p.add_argument(
        "--out",
        required=True,
        help=f"run folder: {paths.LAST_CHECKPOINT} (every epoch), {paths.MODEL}, "
        f"{paths.METRICS}; re-running resumes",
    )


def check_run_arguments(args: argparse.Namespace) -> None:
    """Refuse the numeric options every training command has (`_add_run_arguments`) outside
    their ranges: the seed is a non-negative integer, as a config's seeds are."""
    check_bounds(args, seed=NOT_NEGATIVE, workers=NOT_NEGATIVE)


def _check_train_arguments(args: argparse.Namespace) -> None:
    """`check_run_arguments` and the ranges of `sosp train`'s own numeric options."""
    check_run_arguments(args)
    check_bounds(
        args,
        prune_ratio=FRACTION,
        prune_rounds=AT_LEAST_ONE,
        prune_start=AT_LEAST_ONE,
        prune_every=AT_LEAST_ONE,
        probe_epochs=NOT_NEGATIVE,
        probe_samples=AT_LEAST_ONE,
        probe_temperature=POSITIVE,
        sample_batch_size=AT_LEAST_ONE,
    )


def run_train(args: argparse.Namespace) -> int:
    _check_train_arguments(args)
    torch.manual_seed(args.seed)
    widths = parse_widths(args.widths)
    model, meta = model_for(args.model, args.dataset, widths)
    _check_out(args.out)
    architecture = {"model": args.model, "dataset": meta.name, **_widths_entry(widths)}
    source = {"command": "train", **architecture}
    sparse_hooks = sparse.training_hooks(args, model)
    plan = _rounds_plan(args, model)  # checked before any training

    def make_hooks(net, recipe, train_batches, test_batches, device) -> list:
        hooks = _during_training(args, meta, plan)
        if sparse_hooks is not None:
            hooks += sparse_hooks(net, recipe, train_batches, test_batches, device)
        return hooks

    _run(args, model, source, architecture, tracking.DENSE, Path(args.out), make_hooks=make_hooks)
    if sparse_hooks is not None:
        sparse.write_counts(Path(args.out), meta)
    return 0


def _rounds_plan(args: argparse.Namespace, model: torch.nn.Module) -> RoundsPlan | None:
    """The pruning in rounds the options ask for (None: none), its method's options checked
    and a warning for exclude patterns that match no layer of `model`."""
    if (args.prune_method is None) != (args.prune_ratio is None):
        raise BadInput("pruning during training needs both --prune-method and --prune-ratio")
    if not args.prune_method:
        return None
    settings, options = PruneSettings.split(
        {"seed": args.seed, **parse_options(args.prune_set, "--prune-set")}
    )
    methods.registry.checked_options(args.prune_method, options)
    warn_unmatched_exclusions(args, settings, model, "--prune-set exclude")
    return RoundsPlan(
        args.prune_method, args.prune_ratio, args.prune_rounds, args.prune_start,
        args.prune_every, settings, options,
    )  # fmt: skip


def _during_training(
    args: argparse.Namespace, meta: data.DatasetInfo, plan: RoundsPlan | None
) -> list:
    """The hooks the options ask for: pruning in rounds (`plan`), gradient-flow
    measurements."""
    hooks = []
    wanted = max(
        plan.settings.n_samples if plan else 0, args.probe_samples if args.probe_epochs else 0
    )
    if not wanted:
        return hooks
    samples = list(
        first_samples(
            loaders.pruning_samples(
                meta.name, args.data_root, args.download, args.sample_batch_size, args.seed
            ),
            wanted,
        )
    )
    if plan:
        hooks.append(RoundPruner(plan, samples, meta.input_shape))
    if args.probe_epochs:
        exclude = plan.settings.exclude if plan else ()
        hooks.append(
            FlowProbe(
                args.probe_epochs,
                samples,
                meta.input_shape,
                args.probe_samples,
                args.probe_temperature,
                exclude=exclude,
            )  # fmt: skip
        )
    return hooks


def run_finetune(args: argparse.Namespace) -> int:
    check_run_arguments(args)
    outs = paths.finetune_folders(args.out, args.pruned)
    summary = []
    for out in outs:
        _check_out(out)
    for pruned, out in zip(args.pruned, outs, strict=True):
        ckpt = paths.read_model_file(pruned)
        if "mask" not in ckpt:
            raise BadInput(
                f"{pruned} holds no mask: pass the {paths.PRUNED} written by `sosp prune`"
            )
        architecture = {k: ckpt.get(k) for k in ("model", "dataset", "mask", "exclude")}
        architecture |= _widths_entry(ckpt.get("widths"))
        source = {
            "command": "finetune",
            "model": ckpt["model"],
            "dataset": ckpt["dataset"],
            "pruned": str(Path(pruned).resolve()),
        }
        model = paths.model_from_file(ckpt, pruned)
        origin = tracking.origin(pruned, ckpt) if args.wandb != "disabled" else {}
        metrics = _run(args, model, source, architecture, origin, out)
        summary.append({"pruned": str(pruned), "out": str(out), **_headline(metrics)})
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun only rank 0 writes
        atomic_write_json(paths.runs(args.out), summary)
    return 0


def _widths_entry(widths: dict | None) -> dict:
    """{"widths": spec} for a widened network, else nothing (files of others stay as they were)."""
    return {"widths": widths} if widths else {}


def _check_out(out) -> None:
    """Refuse an unwritable run folder before training; under torchrun rank 0 checks, so
    the ranks do not race creating and removing the same probe folder."""
    if int(os.environ.get("RANK", 0)) == 0:
        check_out_folder(out)


def _headline(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in HEADLINE}


def _run(
    args: argparse.Namespace,
    model: torch.nn.Module,
    source: dict,
    architecture: dict,
    origin: dict,
    out: Path,
    recipe: recipes.Recipe | None = None,
    make_hooks=None,
) -> dict:
    """Train `model` as `args` say into `out`; `source` opens the run's config and
    `architecture` the model file it ends with; `origin` is what `model` was pruned by
    (`tracking.origin`), for the W&B run. `recipe`: this one instead of the one `args` name;
    `make_hooks(model, recipe, train_batches, test_batches, device)`: the hooks `fit` calls
    (`sosp.hooks`), made once the model is on its device. Returns the metrics (empty on
    ranks > 0)."""
    meta = data.info(source["dataset"])
    if recipe is None:
        preset = args.recipe or recipes.default_preset(source["model"], meta.name)
        recipe = recipes.resolve(preset, parse_options(args.set, "--set"), args.recipe_file)
    if args.cuda_graph:  # before joining a process group or loading data
        world = int(os.environ.get("WORLD_SIZE", 1))
        check_supported(resolve_device(args.device, check=False), world)
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
        # only when on, so run folders made before the flag existed keep their config
        **({"cuda_graph": True} if args.cuda_graph else {}),
    }
    logger = _logger(args, model, meta, origin, config, out) if rank == 0 else None
    model = _placed(model, device, amp, world)
    hooks = make_hooks(model, recipe, train_batches, test_batches, device) if make_hooks else ()
    try:
        metrics = fit(
            model,
            recipe,
            train_batches,
            test_batches,
            out,
            config=config,
            architecture=architecture,
            seed=args.seed,
            device=device,
            amp=amp,
            logger=logger,
            progress=show_progress(args) and rank == 0,
            rank=rank,
            cuda_graph=args.cuda_graph,
            hooks=hooks,
        )
        if logger is not None:
            logger.summarize({k: metrics.get(k) for k in SUMMARY})
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


def _placed(model: torch.nn.Module, device: str, amp: bool, world: int) -> torch.nn.Module:
    """`model` on `device` (channels_last with `amp`), wrapped in DDP when `world` > 1."""
    model = model.to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device != "cpu" else None
        )
    return model


def _distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process; under torchrun, joins the process group."""
    device = resolve_device(device)
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


def _loader_kind(choice: str, dataset: str, device: str) -> str:
    if choice == "jpeg" and not data.has_files(dataset):
        raise BadInput(f"--loader jpeg reads image files; {dataset} has none: use tensor or torch")
    if choice != "auto":
        return choice
    if dataset in ("digits", "synthetic"):
        return "tensor"
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu and data.has_files(dataset):
        return "jpeg"
    return "tensor" if on_gpu and dataset in ("cifar10", "cifar100") else "torch"


def per_rank_batch(batch_size: int, world: int) -> int:
    """Each of `world` DDP processes' share of the recipe's (global) `batch_size`."""
    if batch_size % world:
        raise BadInput(
            f"the recipe's batch_size {batch_size} is the global batch and must split evenly "
            f"over the {world} processes: set batch_size to a multiple of {world}"
        )
    return batch_size // world


def _batches(args, meta, recipe, kind, device, rank, world):
    """(train loader, test loader) of the chosen kind; each DDP rank draws its share of every
    training batch."""
    batch = per_rank_batch(recipe.batch_size, world)
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
                    batch if train else 500,
                    shuffle=train,
                    augment=train and recipe.augment,
                    device=device,
                    seed=args.seed,
                    rank=rank if train else 0,
                    world=world if train else 1,
                )
            )
        return tuple(made)
    if kind == "jpeg":
        return tuple(
            JpegLoader(
                data.files(meta.name, split, args.data_root),
                meta,
                batch if split == "train" else 250,
                shuffle=split == "train",
                augment=split == "train" and recipe.augment,
                device=device,
                seed=args.seed,
                workers=args.workers,
                rank=rank if split == "train" else 0,
                world=world if split == "train" else 1,
            )
            for split in ("train", "test")
        )
    pin = torch.device(device).type == "cuda"
    train_set = data.load(meta.name, "train", args.data_root, recipe.augment, args.download)
    test_set = data.load(meta.name, "test", args.data_root, False, args.download)
    common = {"seed": args.seed, "workers": args.workers, "pin_memory": pin}
    return (
        loaders.torch_loader(train_set, batch, shuffle=True, rank=rank, world=world, **common),
        loaders.torch_loader(test_set, 500, shuffle=False, **common),
    )


def _logger(args, model, meta, origin: dict, config: dict, out: Path) -> tracking.Logger | None:
    """The W&B run of a training (None when disabled): `tracking.run_config` of `model`
    (counted before it is placed) with the run's `config` and folder as its settings."""
    if args.wandb == "disabled":
        return None
    counts = counting.count(model, meta.input_shape).as_dict()
    origin = {**origin, "seed": args.seed}
    settings = {**config, "out": str(out)}
    wandb_config = tracking.run_config(
        config["command"], config["model"], meta.name, origin, counts, settings
    )
    return open_run(args, wandb_config, out)


TRAIN = Command(add_train_arguments, run_train)
FINETUNE = Command(add_finetune_arguments, run_finetune)
