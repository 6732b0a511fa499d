"""The `sosp` command. Each subcommand reads files and writes files, so the workflow's rules are
one line each and any step can be run by hand. `sosp <command> --help` explains each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from sosp import counting, data, models
from sosp.errors import SospError

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
    p.add_argument("--json", action="store_true", help='print {"params": ..., "macs": ...}')


@command("count", "count the parameters and MACs of a (pruned) architecture", _count_args)
def cmd_count(args: argparse.Namespace) -> int:
    model, meta = _model_for(args)
    c = counting.count(model, meta.input_shape)
    if args.json:
        print(json.dumps(c.as_dict()))
    else:
        print(f"{args.model} on {meta.name}: {c.params:,} params, {c.macs:,} MACs per image")
    return 0


# --------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
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
        return 2


if __name__ == "__main__":
    sys.exit(main())
