"""`sosp evaluate`: test accuracy, loss, params and MACs of saved networks, and for a
fine-tuned one, the accuracy before fine-tuning and the prune report it came from.

sosp evaluate --checkpoint runs/ft/model.pt --record method=sosp_h --out runs/ft/eval.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from sosp import counting, data, loaders, models, paths, tracking
from sosp.commands.base import (
    AT_LEAST_ONE,
    Command,
    add_data_root,
    add_device,
    add_no_progress,
    add_wandb,
    check_bounds,
    check_out_file,
    log_result,
    parse_options,
    resolve_device,
    show_progress,
)
from sosp.io import atomic_write_json, read_json
from sosp.jpeg_loader import JpegLoader
from sosp.train import evaluate

TestBatches = Callable[[data.DatasetInfo], Iterable]
# A record's entries its W&B run holds as its summary (those the record has).
SUMMARY = ("test_acc", "test_loss", "test_acc_before_finetune", "best_test_acc_selected_on_test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        help=f"model files written by sosp ({paths.MODEL}, {paths.PRUNED}); for a fine-tuned "
        f"one, its {paths.METRICS} and the {paths.PRUNED} and {paths.REPORT} it came from are "
        "read as well",
    )
    p.add_argument("--batch-size", type=int, default=500)
    add_device(p)
    add_data_root(p)
    p.add_argument(
        "--record",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="fields to store with every result (e.g. experiment=fig1 method=sosp_h seed=1)",
    )
    p.add_argument(
        "--convention",
        nargs="*",
        default=[],
        choices=sorted(set(counting.CONVENTIONS) - {"actual"}),
        help="also count MACs by these conventions of other papers (record key macs_<name>), "
        "e.g. ccp: the SOSP paper's alternative count of Table 2 (see `sosp count --help`)",
    )
    add_no_progress(p)
    add_wandb(p)
    p.add_argument("--out", help="write the results as a JSON list here (default: print only)")


def run(args: argparse.Namespace) -> int:
    check_bounds(args, batch_size=AT_LEAST_ONE)
    device = resolve_device(args.device)
    extra = parse_options(args.record, "--record")
    if args.out:
        check_out_file(args.out)
    test_sets: dict[str, Iterable] = {}  # dataset name -> test batches, read once per call

    def test_batches(meta: data.DatasetInfo) -> Iterable:
        if meta.name not in test_sets:
            test_sets[meta.name] = _test_batches(meta, args.data_root, args.batch_size, device)
        return test_sets[meta.name]

    progress = show_progress(args)
    records, origins = [], []
    for c in args.checkpoint:
        record, origin = _evaluate_one(
            Path(c), extra, device, test_batches, progress, args.convention
        )
        print(result_line(record), flush=True)  # as each is done: progress in a log too
        records.append(record)
        origins.append(origin)
    if args.out:
        atomic_write_json(args.out, records)
    for record, origin in zip(records, origins, strict=True):  # a W&B failure loses no result
        _log(args, record, origin, extra)
    return 0


def result_line(record: dict) -> str:
    """The line printed for one evaluated model file, from its record."""
    before = record.get("test_acc_before_finetune")
    note = "" if before is None else f" (before fine-tuning {before:.4f})"
    return (
        f"{record['checkpoint']}: test acc {record['test_acc']:.4f}{note}, "
        f"{record['params']:,} params, {record['macs']:,} MACs"
    )


def _log(args: argparse.Namespace, record: dict, origin: dict, extra: dict) -> None:
    """One evaluated network's W&B run, its files in the model file's folder: its
    `tracking.run_config` (`origin`; the --record fields fill what the files do not tell) and
    its accuracy and loss as its summary."""
    if args.wandb == "disabled":
        return
    own = {"checkpoint": record["checkpoint"], "batch_size": args.batch_size, **extra}
    config = tracking.run_config(
        "evaluate", record["model"], record["dataset"], origin, record, own
    )
    summary = {k: record[k] for k in SUMMARY if k in record}
    log_result(args, config, Path(record["checkpoint"]).parent, summary)


def _evaluate_one(
    path: Path,
    extra: dict,
    device: str,
    test_batches: TestBatches,
    progress: bool = False,
    conventions: Iterable[str] = (),
) -> tuple[dict, dict]:
    """The record of one model file: its test accuracy and counts (MACs also by each of
    `conventions`, as macs_<name>), and where it was fine-tuned from a pruned network, that
    network's accuracy and the prune report; and what the network was pruned by
    (`tracking.origin`). `progress`: a bar per evaluation."""
    ckpt = paths.read_model_file(path)  # a mask.json: says which file to pass
    model = paths.model_from_file(ckpt, path)  # a last.pt or a state dict: says which to pass
    meta = data.info(ckpt["dataset"])
    batches = test_batches(meta)
    result = evaluate(model.to(device), batches, device, progress=progress, desc=str(path))
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
    if conventions:
        dense = models.create_widened(ckpt["model"], meta, ckpt.get("widths"))
        for name in conventions:
            convention = counting.CONVENTIONS[name]
            record[f"macs_{name}"] = convention(dense, model.cpu(), meta.input_shape)
    metrics_path = paths.metrics(path.parent)
    if metrics_path.is_file():
        metrics = read_json(metrics_path)
        record["best_test_acc_selected_on_test"] = metrics.get("best_test_acc_selected_on_test")
        record["train_seconds"] = metrics.get("wall_seconds")
        record |= _during_training(metrics, ckpt, path.parent, meta)
        pruned = metrics.get("config", {}).get("pruned")
        if pruned:
            source = paths.load_model(pruned).to(device)
            before = evaluate(source, batches, device, progress=progress, desc=str(pruned))
            record["test_acc_before_finetune"] = before["acc"]
            report = read_json(paths.report(Path(pruned).parent))
            record["prune"] = {k: v for k, v in report.items() if k not in ("model", "dataset")}
    return record, tracking.origin(path, ckpt)


def _during_training(metrics: dict, ckpt: dict, run: Path, meta: data.DatasetInfo) -> dict:
    """For a run pruned in rounds or measured during training: its per-epoch curve (train
    and test accuracy, the rounds), the rounds (`sosp.rounds`) with the dense network's
    counts, and the measurements of its flow.json (`sosp.flow_probe`). Nothing for others."""
    config = metrics.get("config", {})
    if not any(k.startswith("hook_") for k in config):
        return {}
    keys = ("epoch", "train_acc", "test_acc", "pruning_round", "mask_distance")
    out = {"curve": [{k: row[k] for k in keys if k in row} for row in metrics["epochs"]]}
    if "hook_rounds" in config:
        out["rounds"] = {**config["hook_rounds"], "history": ckpt.get("rounds", [])}
        dense = models.create_widened(ckpt["model"], meta, ckpt.get("widths"))
        out["dense_counts"] = counting.count(dense, meta.input_shape).as_dict()
    if paths.flow(run).is_file():
        out["flow"] = read_json(paths.flow(run))
    return out


def _layer_fractions(ckpt: dict, meta: data.DatasetInfo) -> dict[str, float]:
    """Pruned fraction of the output channels of every conv and linear layer of the dense
    model, in network order (0 for a layer the mask leaves whole), from the mask."""
    mask = ckpt.get("mask") or {}
    if not mask:
        return {}
    dense = models.create_widened(ckpt["model"], meta, ckpt.get("widths"))
    return {
        name: len(mask.get(name, [])) / m.weight.shape[0]
        for name, m in dense.named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    }


def _test_batches(meta: data.DatasetInfo, root, batch_size: int, device: str) -> Iterable:
    if data.has_files(meta.name):  # decoded on a GPU, else the reference path
        if torch.device(device).type == "cuda":
            files = data.files(meta.name, "test", root)
            return JpegLoader(files, meta, batch_size, shuffle=False, augment=False, device=device)
        test = data.load(meta.name, "test", root, augment=False)
        return loaders.torch_loader(test, batch_size, shuffle=False, workers=4)
    x, y = data.tensors(meta.name, "test", root)
    return loaders.TensorLoader(x, y, meta, batch_size, shuffle=False, augment=False)


COMMAND = Command(add_arguments, run)
