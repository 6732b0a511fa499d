"""`sosp prune`: a mask and the physically pruned network per ratio, from one saliency
computation on samples of the training split.

sosp prune --model resnet20 --dataset digits --checkpoint runs/dense/model.pt \\
    --method sosp_h --ratio 0.3 0.6 --exclude resnet_downsample --out runs/p
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from sosp import batch_size as auto_batch
from sosp import data, loaders, methods, paths, tracking
from sosp.api import PruneResult, prune_with
from sosp.commands.base import (
    AT_LEAST_ONE,
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
    log_result,
    model_for,
    parse_options,
    parse_widths,
    resolve_device,
    show_progress,
    warn_unmatched_exclusions,
)
from sosp.io import atomic_write_text
from sosp.settings import PruneSettings

AUTO = "auto"
RECALIBRATE_DEFAULT = "unset"
# The report's entries a ratio's W&B run holds as its summary: counts before and after, time.
SUMMARY = (
    "before",
    "after",
    "params_removed",
    "macs_removed",
    "pruned_structures",
    "structures",
    "seconds",
    "seconds_saliency",
    "latency",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model(p)
    add_dataset(p, "; the pruning samples come from its training split, without augmentation")
    p.add_argument(
        "--checkpoint",
        help="weights to prune (a model file, a state dict, or a dict with 'state_dict'); "
        "without it the randomly initialized network is pruned",
    )
    p.add_argument("--method", default="sosp_h", help="one of: " + ", ".join(methods.names()))
    p.add_argument(
        "--ratio",
        type=float,
        nargs="+",
        required=True,
        help="fraction to prune, in (0, 1), of the --budget quantity; several ratios share one "
        "saliency computation and go to OUT/<ratio>/",
    )
    PruneSettings.add_arguments(p, default_help={"recalibrate_bn": RECALIBRATE_DEFAULT})
    add_no_progress(p)
    p.add_argument(
        "--option",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="method options, e.g. diagonal=true label_samples=10",
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=100,
        help="pruning samples per saliency pass (default: 100), or 'auto': as many as the "
        "device's free memory holds for this method, measured on passes over 1 and 2 samples",
    )
    add_device(p)
    add_data_root(p)
    add_download(p)
    add_wandb(p)
    p.add_argument(
        "--out",
        required=True,
        help=f"folder for {paths.MASK}, {paths.PRUNED}, {paths.REPORT} (one sub-folder per "
        f"ratio when several are given) and {paths.REPORTS}, the list of all reports, "
        "written last",
    )


def run(args: argparse.Namespace) -> int:
    settings = PruneSettings.from_args(args)
    options = parse_options(args.option)
    if args.batch_size != AUTO:
        check_bounds(args, batch_size=AT_LEAST_ONE)
    torch.manual_seed(settings.seed)  # without --checkpoint: the init `sosp train` starts from
    widths = parse_widths(args.widths)
    model, meta = model_for(args.model, args.dataset, widths)
    if args.checkpoint:
        paths.load_weights(model, args.checkpoint, args.model)
        paths.check_finite_weights(model, f"checkpoint {args.checkpoint}")
    warn_unmatched_exclusions(args, settings, model)
    device = resolve_device(args.device)
    folders = paths.ratio_folders(args.out, args.ratio)  # every check before any work
    check_out_folder(args.out)
    model = model.to(device)  # every step of the pruning runs there
    batch_size = args.batch_size
    if batch_size == AUTO:
        probe = next(iter(_samples(meta, args, settings.seed, max(auto_batch.PROBES))))
        chosen = auto_batch.for_method(model, args.method, probe, settings, options)
        print(chosen.line(device))
        batch_size = chosen.batch_size
    samples = _samples(meta, args, settings.seed, batch_size)
    progress = show_progress(args)  # a bar on a terminal only, never into a log
    results = prune_with(model, args.method, args.ratio, samples, settings, options, progress)
    _say_recalibrated(results[0].report["bn_recalibration"])
    arch = {"model": args.model, "dataset": meta.name, "exclude": settings.exclude_list}
    arch |= {"widths": widths} if widths else {}
    run_info = {"checkpoint": args.checkpoint, "seed": settings.seed, "batch_size": batch_size}
    shape = {"input_shape": list(meta.input_shape)}  # what `check_mask_fits` compares
    reports = [
        _write(folder, r, arch, run_info, shape) for folder, r in zip(folders, results, strict=True)
    ]
    atomic_write_text(paths.reports(args.out), json.dumps(reports, indent=1))
    for report in reports:  # after every file is written: a W&B failure loses no result
        _log(args, settings, options, report)
    return 0


def _log(args, settings: PruneSettings, options: dict, report: dict) -> None:
    """One ratio's W&B run, its files in the ratio's folder: the pruned network's
    `tracking.run_config` (params and MACs after pruning; the settings and options it was
    pruned with) and the report's counts and seconds as its summary."""
    if args.wandb == "disabled":
        return
    own = {
        **dataclasses.asdict(settings),
        "exclude": settings.exclude_list,
        "options": options,
        "checkpoint": args.checkpoint,
        "batch_size": report["batch_size"],
        "n_samples": report["n_samples"],
        "out": report["folder"],
    }
    after = report["after"]
    origin = tracking.from_report(report)
    config = tracking.run_config("prune", args.model, report["dataset"], origin, after, own)
    log_result(args, config, report["folder"], {k: report[k] for k in SUMMARY})


def _samples(meta: data.DatasetInfo, args: argparse.Namespace, seed: int, batch_size: int):
    """Batches of the training split, unaugmented, in an order drawn by `seed` (the same
    order whatever the batch size)."""
    return loaders.pruning_samples(meta.name, args.data_root, args.download, batch_size, seed)


def _batch_size(text: str) -> int | str:
    """--batch-size: a whole number, or 'auto'."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor 'auto'") from None


def _say_recalibrated(info: dict | None) -> None:
    if info:
        why = " (they had their initial statistics)" if info["because"] != "asked" else ""
        print(
            f"recalibrated the statistics of {info['batchnorms']} BatchNorms{why} on "
            f"{info['samples']} pruning samples: eval-mode logit std "
            f"{info['logit_std_before']:.3g} -> {info['logit_std_after']:.3g}"
        )


def _write(folder, r: PruneResult, arch: dict, run_info: dict, shape: dict) -> dict:
    """Write one ratio's mask, pruned network and report into `folder`; returns the report
    with its folder, for the list of reports."""
    report = {**arch, **run_info, **r.report}
    paths.save_mask(r.mask, paths.mask(folder), **arch, **shape)
    paths.save_model(paths.pruned(folder), r.model, {**arch, **shape, "mask": r.mask})
    atomic_write_text(paths.report(folder), json.dumps(report, indent=1))
    rep = r.report
    print(
        f"{rep['method']} at {rep['ratio']:g}: pruned {rep['pruned_structures']} of "
        f"{rep['structures']} structures; params {rep['before']['params']:,} -> "
        f"{rep['after']['params']:,}, MACs {rep['before']['macs']:,} -> "
        f"{rep['after']['macs']:,}; {rep['seconds']:.1f} s. Wrote {folder}/"
    )
    if rep["latency"]:
        print("  " + latency_line(rep["latency"]))
    return {**report, "folder": str(folder)}


def latency_line(lat: dict) -> str:
    """The report's latency as one line: predicted by the table, and measured (after how
    many measured corrections of the selection)."""
    on = lat["measured_on"]
    rounds = lat.get("corrections") or []
    corrected = f" after {len(rounds) - 1} measured corrections" if len(rounds) > 1 else ""
    return (
        f"latency ({on['device_name']}, {on['precision']} {on['layout']}, batch {on['batch']}): "
        f"predicted {lat['predicted_ms']:.3g} ms of the table's dense {lat['dense_table_ms']:.3g} "
        f"({lat['speedup_predicted']:.2f}x); measured {lat['measured_ms']:.3g} ms of "
        f"{lat['dense_ms']:.3g} dense ({lat['speedup_measured']:.2f}x){corrected}"
    )


COMMAND = Command(add_arguments, run)
