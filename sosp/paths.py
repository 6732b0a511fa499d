"""Where each file of a run lives, and the formats of the model and mask files.

Every file name of a run is spelled here once; the library, the commands and the workflow
ask this module for it.

    sosp train / sosp finetune OUT:   last.pt, model.pt, metrics.json
                                      (several pruned networks: one such folder each, and
                                      runs.json, the list of their headline metrics)
    sosp prune OUT:                   mask.json, pruned.pt, report.json (several ratios: one
                                      such folder each), and reports.json, the list of reports
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from sosp import data, models
from sosp.api import apply_mask
from sosp.errors import BadInput
from sosp.io import atomic_save, atomic_write_text, load_checkpoint
from sosp.surgery import Mask

LAST_CHECKPOINT = "last.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
MASK = "mask.json"
PRUNED = "pruned.pt"
REPORT = "report.json"
REPORTS = "reports.json"
RUNS = "runs.json"

PathLike = str | os.PathLike


# -- a training run (sosp train, sosp finetune) ----------------------------------------------


def last_checkpoint(run: PathLike) -> Path:
    """{epoch, model, optimizer, history, wall_seconds, config}, rewritten atomically after
    every epoch; a re-run resumes from it."""
    return Path(run) / LAST_CHECKPOINT


def model(run: PathLike) -> Path:
    """The trained network as a model file (`save_model`, `load_model`)."""
    return Path(run) / MODEL


def metrics(run: PathLike) -> Path:
    """Per-epoch metrics, final and best test accuracy, wall time, device, versions and the
    run's config; "finished": true once the run is complete."""
    return Path(run) / METRICS


def runs(out: PathLike) -> Path:
    """The list of {pruned, out, headline metrics} of a `sosp finetune` call, written last."""
    return Path(out) / RUNS


def finetune_folders(out: PathLike, pruned_files: Sequence[PathLike]) -> list[Path]:
    """The run folder of each pruned network `sosp finetune --out OUT` trains: OUT for one;
    OUT/<name of its pruned file's folder> for each of several."""
    if len(pruned_files) == 1:
        return [Path(out)]
    names = [Path(p).parent.name for p in pruned_files]
    if len(set(names)) != len(names):
        raise BadInput("several pruned files must lie in differently named folders")
    return [Path(out) / name for name in names]


# -- a pruning run (sosp prune) --------------------------------------------------------------


def ratio_folder(out: PathLike, ratios: Sequence[float], ratio: float) -> Path:
    """Where `sosp prune --out OUT` puts the files of `ratio`: OUT when it prunes at one
    ratio, OUT/<ratio> (e.g. OUT/0.3) when at several."""
    return Path(out) if len(ratios) == 1 else Path(out) / f"{ratio:g}"


def mask(folder: PathLike) -> Path:
    """The mask as JSON (`save_mask`, `load_mask`)."""
    return Path(folder) / MASK


def pruned(folder: PathLike) -> Path:
    """The physically pruned network as a model file."""
    return Path(folder) / PRUNED


def report(folder: PathLike) -> Path:
    """The prune report of one ratio: settings, counts before and after, timing."""
    return Path(folder) / REPORT


def reports(out: PathLike) -> Path:
    """The list of every ratio's report, each with its folder; written last."""
    return Path(out) / REPORTS


# -- model files (pruned.pt, model.pt) -------------------------------------------------------


def model_file(net: nn.Module, architecture: dict) -> dict:
    """The on-disk form of a network: `architecture`, what rebuilds it ({"model": zoo name,
    "dataset": name} and for a pruned network "mask" and "exclude"), plus its weights."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}  # loads anywhere
    return {**architecture, "state_dict": state}


def save_model(path: PathLike, net: nn.Module, architecture: dict) -> None:
    """Write `net` as a model file (see `model_file`), atomically."""
    atomic_save(model_file(net, architecture), path)


def load_model(path: PathLike) -> nn.Module:
    """The network of a model file (pruned.pt from `sosp prune`, model.pt from `sosp train`
    or `sosp finetune`): the architecture rebuilt from its model name, dataset and mask
    (none: the dense network), then its weights loaded."""
    return model_from_file(load_checkpoint(path), path)


def model_from_file(ckpt: dict, path: PathLike = "the model file") -> nn.Module:
    """`load_model` for a model file already read with `sosp.io.load_checkpoint`."""
    try:
        meta = data.info(ckpt["dataset"])
        net = models.create(ckpt["model"], meta.num_classes, meta.in_channels, meta.image_size)
        if ckpt.get("mask"):
            net = apply_mask(net, ckpt["mask"], meta.input_shape, ckpt.get("exclude"))
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise BadInput(
            f"{path} is not a model file written by sosp ({type(e).__name__}: {e})"
        ) from e
    return net


def load_weights(net: nn.Module, path: PathLike) -> None:
    """Load the weights of `path` (a state dict, or a dict holding 'state_dict' such as a
    model file) into `net`; a clear error when they do not fit."""
    ckpt = load_checkpoint(path)
    try:
        net.load_state_dict(ckpt.get("state_dict", ckpt))
    except RuntimeError as e:
        raise BadInput(f"checkpoint {path} does not fit the model: {e}") from e


# -- mask files (mask.json) ------------------------------------------------------------------


def save_mask(mask: Mask, path: PathLike, **meta) -> None:
    """Write `{**meta, "mask": mask}` as JSON, atomically."""
    atomic_write_text(path, json.dumps({**meta, "mask": mask}, indent=1))


def load_mask(path: PathLike) -> Mask:
    """The mask of a mask file written by `save_mask` or `sosp prune`: {layer: channels}."""
    return read_mask_file(path)["mask"]


def read_mask_file(path: PathLike) -> dict:
    """The whole mask file: {"mask": {layer: channels}, "model", "dataset", "exclude", ...}."""
    try:
        doc = json.loads(Path(path).read_text())
        doc["mask"] = {str(k): [int(c) for c in v] for k, v in doc["mask"].items()}
        return doc
    except FileNotFoundError as e:
        raise BadInput(f"mask file {path} does not exist") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path} is not a mask file written by `sosp prune` ({e})") from e
