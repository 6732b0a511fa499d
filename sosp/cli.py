"""The `sosp` command. Each subcommand reads files and writes files, so the workflow's rules are
one line each and any step can be run by hand. `sosp <command> --help` explains each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from sosp import api, counting, data, methods, models
from sosp.errors import BadInput, SospError
from sosp.io import atomic_save, atomic_write_text, load_checkpoint

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Command, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `fn(args) -> exit code` as subcommand `name`; `arguments(parser)` adds its
    options."""

    def wrap(fn: Command) -> Command:
        _COMMANDS[name] = (fn, arguments, help)
        return fn

    return wrap


def _model_for(args: argparse.Namespace):
    """(model, dataset info) for --model on --dataset (default: the model's own dataset)."""
    dataset = args.dataset or models.spec(args.model).dataset
    meta = data.info(dataset)
    model = models.create(args.model, meta.num_classes, meta.in_channels, meta.image_size)
    return model, meta


# --------------------------------------------------------------------------------------------


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        help="count for this dataset's input and classes "
        "(default: each model's own, cifar10 or imagenet)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per model")


@command("models", "list the model zoo with parameter and MAC counts", _models_args)
def cmd_models(args: argparse.Namespace) -> int:
    rows = []
    for name in models.names():
        args.model = name
        model, meta = _model_for(args)
        c = counting.count(model, meta.input_shape)
        rows.append(
            {
                "model": name,
                "dataset": meta.name,
                **c.as_dict(),
                "summary": models.spec(name).summary,
            }
        )
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'model':<20} {'dataset':<9} {'params':>12} {'MACs':>15}  summary")
    for r in rows:
        print(
            f"{r['model']:<20} {r['dataset']:<9} {r['params']:>12,} {r['macs']:>15,}  "
            f"{r['summary']}"
        )
    print("\nAny timm model is available as timm/<name>.")
    return 0


def _count_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `sosp models`) or timm/<name>")
    p.add_argument("--dataset", help="dataset the model is built for (default: the model's own)")
    p.add_argument("--mask", help="mask.json from `sosp prune`: count the pruned architecture")
    p.add_argument("--json", action="store_true", help='print {"params": ..., "macs": ...}')


@command("count", "count the parameters and MACs of a (pruned) architecture", _count_args)
def cmd_count(args: argparse.Namespace) -> int:
    model, meta = _model_for(args)
    if args.mask:
        doc = api.read_mask_file(args.mask)
        model = api.apply_mask(model, doc["mask"], meta.input_shape, doc.get("exclude"))
    c = counting.count(model, meta.input_shape)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        print(f"{args.model} on {meta.name}: {c.params:,} params, {c.macs:,} MACs per image")
    return 0


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `sosp models`) or timm/<name>")
    p.add_argument(
        "--dataset",
        help="dataset (default: the model's own); the pruning samples "
        "come from its training split, without augmentation",
    )
    p.add_argument(
        "--checkpoint",
        help="weights to prune (a state dict, or a dict with "
        "'state_dict'); without it the randomly initialized network is pruned",
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
    p.add_argument("--budget", default="structures", choices=["structures", "params", "macs"])
    p.add_argument("--scope", default="global", choices=["global", "local"])
    p.add_argument(
        "--max-layer-fraction",
        type=float,
        help="prune at most this fraction of any layer's structures (e.g. 0.95)",
    )
    p.add_argument(
        "--kernel-scaling",
        action="store_true",
        help="divide saliencies by the kernel size (the paper's SOSP*)",
    )
    p.add_argument(
        "--recalibrate-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="re-estimate BatchNorm running statistics on the pruning samples before the "
        "saliencies (default: on without --checkpoint, i.e. when pruning at initialization, "
        "where the initial statistics 0 and 1 make the eval-mode network meaningless)",
    )
    p.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        help="fnmatch patterns of layers never pruned, or the preset "
        "'resnet_downsample' (the paper's setting for ResNets)",
    )
    p.add_argument(
        "--option",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="method options, e.g. diagonal=true label_samples=10",
    )
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "squared"])
    p.add_argument("--n-samples", type=int, default=1000, help="N', samples for the saliencies")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="picks the N' samples (and labels)")
    p.add_argument("--data-root", help="folder holding the datasets (default $SOSP_DATA or ./data)")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is missing")
    p.add_argument(
        "--out",
        required=True,
        help="folder for mask.json, pruned.pt, report.json (one sub-folder per ratio when "
        "several are given) and reports.json, the list of all reports, written last",
    )


def parse_options(items: list[str]) -> dict:
    """KEY=VALUE strings to a dict, values read as JSON where they parse (true, 3, 0.5)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(f"--option takes KEY=VALUE, not {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load a state dict (or a dict holding 'state_dict') into `model`, with clear errors."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BadInput(f"checkpoint {path} does not fit the model: {e}") from e


@command("prune", "compute a pruning mask and the physically pruned network", _prune_args)
def cmd_prune(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)  # without --checkpoint: the init `sosp train` starts from
    model, meta = _model_for(args)
    if args.checkpoint:
        load_weights(model, args.checkpoint)
    train = data.load(
        meta.name, "train", root=args.data_root, augment=False, download=args.download
    )
    g = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        train, batch_size=args.batch_size, shuffle=True, generator=g
    )
    exclude = args.exclude or None
    recalibrate = args.recalibrate_bn if args.recalibrate_bn is not None else not args.checkpoint
    results = api.prune_ratios(
        model,
        args.method,
        args.ratio,
        loader,
        args.loss,
        exclude,
        n_samples=args.n_samples,
        budget=args.budget,
        scope=args.scope,
        max_layer_fraction=args.max_layer_fraction,
        kernel_scaling=args.kernel_scaling,
        recalibrate_bn=recalibrate,
        seed=args.seed,
        progress=True,
        **parse_options(args.option),
    )
    recalibration = results[0].report["bn_recalibration"]
    if recalibration:
        print(
            f"recalibrated the statistics of {recalibration['batchnorms']} BatchNorms on "
            f"{recalibration['samples']} pruning samples: eval-mode logit std "
            f"{recalibration['logit_std_before']:.3g} -> {recalibration['logit_std_after']:.3g}"
        )
    out = Path(args.out)
    arch = {"model": args.model, "dataset": meta.name, "exclude": exclude}
    reports = []
    for ratio, r in zip(args.ratio, results, strict=True):
        folder = out if len(args.ratio) == 1 else out / f"{ratio:g}"
        report = {**arch, "checkpoint": args.checkpoint, "seed": args.seed, **r.report}
        api.save_mask(r.mask, folder / "mask.json", **arch)
        atomic_save(
            api.model_file(args.model, meta.name, r.model, exclude=exclude, mask=r.mask),
            folder / "pruned.pt",
        )
        atomic_write_text(folder / "report.json", json.dumps(report, indent=1))
        reports.append({**report, "folder": str(folder)})
        print(
            f"{args.method} at {ratio:g}: pruned {r.report['pruned_structures']} of "
            f"{r.report['structures']} structures; params {r.report['before']['params']:,} -> "
            f"{r.report['after']['params']:,}, MACs {r.report['before']['macs']:,} -> "
            f"{r.report['after']['macs']:,}; {r.report['seconds']:.1f} s. Wrote {folder}/"
        )
    atomic_write_text(out / "reports.json", json.dumps(reports, indent=1))
    return 0


# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    from sosp import cli_train  # noqa: F401  (registers train, finetune, evaluate)

    top = argparse.ArgumentParser(
        prog="sosp",
        description="Second-order structured pruning (SOSP-I, SOSP-H) and its baselines.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, add_arguments, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=fn)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SospError as e:
        print(f"sosp {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
