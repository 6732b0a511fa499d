"""What every `sosp` command is made of, and the arguments several commands share."""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sosp import data, io, models, paths, tracking
from sosp.errors import BadInput
from sosp.settings import RATIO_BOUNDS, PruneSettings, check_number, cut_layers


@dataclass(frozen=True)
class Command:
    """One `sosp` subcommand: `add_arguments(parser)` declares its options; `run(args)` does
    the work and returns the exit code. Errors for the user are raised as `SospError`. Its
    name and help line are its entry in `sosp.commands.registry`."""

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def parse_options(items: list[str], flag: str = "--option", form: str = "KEY=VALUE") -> dict:
    """KEY=VALUE strings to a dict, values read as JSON where they parse (true, 3, 0.5);
    `BadInput` for an item without "=", an empty key, or a key given twice (`form`: how the
    message writes an item)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"{flag} takes {form}, not {item!r}")
        if key in out:
            raise BadInput(f"{flag} gives {key} twice; keep one {key}=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# JSON-schema bounds (as `sosp.settings.check_number` reads them) of common numeric options
AT_LEAST_ONE = {"minimum": 1}
NOT_NEGATIVE = {"minimum": 0}
POSITIVE = {"exclusiveMinimum": 0}
FRACTION = RATIO_BOUNDS
FINITE: dict = {}  # any finite number


def check_bounds(args: argparse.Namespace, **bounds: Mapping) -> None:
    """Refuse, naming the option, a value of option `name` (its argparse dest) outside
    `bounds[name]`, or not finite; an option not given (None) passes, a list is checked item
    by item."""
    for name, allowed in bounds.items():
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            check_number(flag, item, allowed)
            if not math.isfinite(item):
                raise BadInput(f"{flag} must be a finite number, not {item}")


def warn(args: argparse.Namespace, message: str) -> None:
    """Print `message` as one line `sosp <command>: warning: ...` on stderr."""
    print(f"sosp {args.command}: warning: {message}", file=sys.stderr)


def warn_unmatched_exclusions(
    args: argparse.Namespace, settings: PruneSettings, model: nn.Module, flag: str = "--exclude"
) -> None:
    """Warn (not refuse: a workflow config gives one list to several models) about `exclude`
    patterns that match no conv or linear layer of `model`."""
    unmatched = settings.unmatched_exclusions(model)
    if unmatched:
        layers = cut_layers(model)
        warn(
            args,
            f"{flag} pattern(s) {', '.join(map(repr, unmatched))} match no conv or linear "
            f"layer of {args.model}, so they exclude nothing; a pattern matches whole layer "
            f"names such as {layers[0]!r}, {layers[-1]!r} (fnmatch: 'layer1.*' for a stage)",
        )


# -- shared arguments -------------------------------------------------------------------------


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `sosp models`) or timm/<name>")
    p.add_argument(
        "--widths",
        nargs="+",
        metavar="UNIT=MULT",
        help="widen the zoo model (CIFAR ResNets, VGGs; expand-pruning): a stage, block or VGG "
        "layer name, or * for every width, times a multiplier, e.g. layer2=2 or '*=1.1'; or "
        "the JSON file `sosp bottlenecks` writes",
    )


def add_dataset(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--dataset", help=f"dataset (default: the model's own){more}")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda if present)")


def add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="folder holding the datasets (default $SOSP_DATA or ./data)")


def add_download(p: argparse.ArgumentParser) -> None:
    p.add_argument("--download", action="store_true", help="download CIFAR if it is missing")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they show only when stderr is a terminal; the result lines are "
        "printed either way)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether to draw progress bars: not with --no-progress, nor into a log file or pipe,
    where a redrawn bar is noise and the printed lines say the same."""
    return not args.no_progress and sys.stderr.isatty()


def add_wandb(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wandb", default="disabled", choices=tracking.MODES, help="W&B logging (optional)"
    )
    p.add_argument("--wandb-project", default="sosp")
    p.add_argument("--wandb-group", help="e.g. one per figure and method, so seeds aggregate")
    p.add_argument(
        "--wandb-tags", nargs="*", default=[], help="e.g. the experiment, figure or table"
    )


# -- shared steps -----------------------------------------------------------------------------


def model_for(
    model: str, dataset: str | None, widths: dict[str, float] | None = None
) -> tuple[nn.Module, data.DatasetInfo]:
    """(a fresh `model` from the zoo, widened by `widths` where given, the dataset's info) for
    `dataset` (None: the model's own)."""
    meta = data.info(dataset or models.spec(model).dataset)
    return models.create_widened(model, meta, widths), meta


def parse_widths(items: list[str] | None) -> dict[str, float] | None:
    """`--widths` as a width spec: UNIT=MULT items, or one JSON file of {unit: multiplier}."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        path = Path(items[0])
        if not path.is_file():
            raise BadInput(
                f"--widths {path}: no such file; pass UNIT=MULT items (e.g. layer2=2 or "
                "'*=1.1') or the JSON file `sosp bottlenecks` writes"
            )
        try:
            spec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"--widths {path}: not a readable JSON width spec ({e})") from None
        if not isinstance(spec, dict):
            raise BadInput(f"--widths {path} must hold a mapping of unit -> multiplier")
        return spec
    return parse_options(items, "--widths", "UNIT=MULT items (e.g. layer2=2 or '*=1.1')")


def open_run(args: argparse.Namespace, config: dict, directory: str | os.PathLike):
    """The W&B run (`tracking.Logger`) of one `tracking.run_config` as the `add_wandb` options
    say: its job type the command, its name `tracking.run_name`; W&B's files go to
    `directory`."""
    return tracking.Logger(
        args.wandb,
        directory=directory,
        project=args.wandb_project,
        group=args.wandb_group,
        job_type=config["command"],
        name=tracking.run_name(config),
        tags=args.wandb_tags,
        config=config,
    )


def log_result(
    args: argparse.Namespace, config: dict, directory: str | os.PathLike, summary: dict
) -> None:
    """One finished W&B run (see `open_run`) holding a result as its summary: what prune and
    evaluate log, once per network."""
    if args.wandb == "disabled":
        return
    logger = open_run(args, config, directory)
    try:
        logger.summarize(summary)
    finally:
        logger.finish()


def resolve_device(device: str, check: bool = True) -> str:
    """'auto' -> 'cuda' where a GPU is present, else 'cpu'; anything else as given, after
    checking (unless `check` is false) that it names a device this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not check:
        return device
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise BadInput(
            f"--device {device!r} is not a device; pass cpu, cuda, cuda:N or auto"
        ) from None
    if kind.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInput(
                f"--device {device}: no CUDA GPU is visible on this machine; pass --device cpu, "
                "or auto (a GPU where there is one)"
            )
        if kind.index is not None and kind.index >= count:
            raise BadInput(
                f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}; pass one of those"
            )
    elif kind.type == "mps":
        if not torch.backends.mps.is_available():
            raise BadInput(f"--device {device}: MPS is not available here; pass --device cpu")
    elif kind.type != "cpu":
        raise BadInput(f"--device {device}: sosp runs on cpu, cuda or mps; pass one of those")
    return device


def check_out_folder(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be written, before any computing, then claim it
    for this command (`sosp.io.claim_folder`: created and locked until the command ends; a
    folder another command is writing is refused). The check tries to create the folder (and
    its missing parents) and a temporary file in it, then removes what the try created, so a
    refused command leaves nothing behind."""
    _refuse_empty(folder, flag)
    _check_writable(folder, flag)
    io.claim_folder(folder, flag)


def _refuse_empty(path: str | os.PathLike, flag: str) -> None:
    """Refuse an empty path, which would name the current folder."""
    if not str(path).strip():
        raise BadInput(f"{flag} is empty; pass the path to write")


def _check_writable(folder: str | os.PathLike, flag: str) -> None:
    """Refuse (`BadInput`) a `folder` in which no file can be created, leaving nothing
    behind: see `check_out_folder`."""
    folder = Path(folder)
    missing, probe = [], folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BadInput(
            f"{flag} {folder}: {probe} is a {io.file_kind(probe)}, not a folder; choose "
            "another path"
        )
    created = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".sosp-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise BadInput(
            f"{flag} {folder} cannot be written ({e.strerror or e}); choose a writable folder"
        ) from None
    finally:
        for d in reversed(created):
            d.rmdir()


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> None:
    """`check_out_folder` for an output file, without the claim (commands write many files
    into one folder at once): its folder must be writable and the path, where it exists, a
    regular file."""
    _refuse_empty(path, flag)
    path = Path(path)
    try:
        io.refuse_special(path)  # a folder, a device, a FIFO
    except OSError as e:  # a name too long, a folder on the way not searchable
        raise BadInput(
            f"{flag} {path} cannot be written ({e.strerror}); choose another path"
        ) from None
    _check_writable(path.parent, flag)


def check_startup(args: argparse.Namespace) -> None:
    """The checks of the shared options that need no work done, made before a command starts
    any: a W&B login for `--wandb online` (`tracking.check_ready`)."""
    if hasattr(args, "wandb"):
        tracking.check_ready(args.wandb)


def what_was_kept(folders: list[Path]) -> str:
    """What an interrupted command leaves in the run `folders` it claimed, as the rest of its
    one-line message: per folder the epoch its last checkpoint holds (re-running resumes
    there), else the files it wrote (whole: every write is atomic) or that it wrote none."""
    return "; ".join(_kept_in(folder) for folder in folders)


def _kept_in(folder: Path) -> str:
    last = paths.last_checkpoint(folder)
    if last.is_file():
        return f"{last} holds epoch {_epochs_of(folder)}: re-run the same command to resume"
    written = [str(p) for p in io.written_since_claimed(folder)]
    if not written:
        return f"nothing written to {folder}; re-run the same command"
    shown = ", ".join(written[:4]) + (f" and {len(written) - 4} more" if len(written) > 4 else "")
    return f"wrote {shown} in {folder} (whole files), not the rest; re-run the same command"


def _epochs_of(folder: Path) -> str:
    """'N of M': the epoch a run folder's last checkpoint holds, of the run's metrics' total;
    read without loading the tensors ('?' where a file is unreadable)."""
    try:
        epoch = torch.load(
            paths.last_checkpoint(folder), mmap=True, weights_only=True, map_location="cpu"
        )["epoch"]
    except (OSError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError):
        epoch = "?"
    try:
        total = json.loads(paths.metrics(folder).read_text())["epochs_total"]
    except (OSError, ValueError, KeyError):
        return str(epoch)
    return f"{epoch} of {total}"
