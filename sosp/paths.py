"""Where each file of a run lives, and the formats of the model and mask files.

Every file name of a run is spelled here once; the library, the commands and the workflow
ask this module for it.

    sosp train / sosp finetune OUT:   last.pt, model.pt, metrics.json (and flow.json with
                                      --probe-epochs: the gradient-flow measurements)
                                      (several pruned networks: one such folder each, and
                                      runs.json, the list of their headline metrics)
    sosp prune OUT:                   mask.json, pruned.pt, report.json (several ratios: one
                                      such folder each), and reports.json, the list of reports
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sosp import data, models
from sosp.api import apply_mask
from sosp.errors import BadInput
from sosp.io import atomic_save, atomic_write_text, load_checkpoint, refuse_folder
from sosp.surgery import Mask

LAST_CHECKPOINT = "last.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
MASK = "mask.json"
PRUNED = "pruned.pt"
REPORT = "report.json"
REPORTS = "reports.json"
RUNS = "runs.json"
FLOW = "flow.json"
SPARSITY = "sparsity.json"

PathLike = str | os.PathLike


# -- a training run (sosp train, sosp finetune) ----------------------------------------------


def last_checkpoint(run: PathLike) -> Path:
    """{epoch, model, optimizer, history, wall_seconds, config}, rewritten atomically after
    every epoch; a re-run resumes from it."""
    return Path(run) / LAST_CHECKPOINT


def flow(run: PathLike) -> Path:
    """The gradient-flow measurements of a run (`sosp.flow_probe`), rewritten every epoch."""
    return Path(run) / FLOW


def model(run: PathLike) -> Path:
    """The trained network as a model file (`save_model`, `load_model`)."""
    return Path(run) / MODEL


def metrics(run: PathLike) -> Path:
    """Per-epoch metrics, wall time, device, versions and the run's config, rewritten
    atomically after every epoch with "finished": false and "epochs_done" (of "epochs_total");
    once the run is complete, "finished": true and the final and best test accuracy."""
    return Path(run) / METRICS


def runs(out: PathLike) -> Path:
    """The list of {pruned, out, headline metrics} of a `sosp finetune` call, written last."""
    return Path(out) / RUNS


def sparsity(run: PathLike) -> Path:
    """The exact counts of a weight-pruned network (`sosp.unstructured.counts`) with its test
    accuracy after each pruning and after training, written when `sosp retrain` (or `sosp train
    --sparse`) finishes."""
    return Path(run) / SPARSITY


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


def ratio_folders(out: PathLike, ratios: Sequence[float]) -> list[Path]:
    """`ratio_folder` of each ratio; refuses ratios given twice or named alike (0.3 and
    0.30000001 would both go to OUT/0.3), so no ratio's files overwrite another's."""
    folders = [ratio_folder(out, ratios, r) for r in ratios]
    first: dict[Path, float] = {}
    for r, folder in zip(ratios, folders, strict=True):
        if folder in first:
            if first[folder] == r:
                raise BadInput(f"--ratio {r:g} is given twice; give each ratio once")
            raise BadInput(
                f"--ratio {first[folder]!r} and {r!r} would both be written to {folder}/ "
                "(folders are named by 6 significant digits); give ratios that differ there"
            )
        first[folder] = r
    return folders


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
    "dataset": name}, "widths" for a widened one, and for a pruned network "mask" and
    "exclude"), plus its weights."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}  # loads anywhere
    return {**architecture, "state_dict": state}


def save_model(path: PathLike, net: nn.Module, architecture: dict) -> None:
    """Write `net` as a model file (see `model_file`), atomically."""
    atomic_save(model_file(net, architecture), path)


def load_model(path: PathLike) -> nn.Module:
    """The network of a model file (pruned.pt from `sosp prune`, model.pt from `sosp train`
    or `sosp finetune`): the architecture rebuilt from its model name, dataset and mask
    (none: the dense network), then its weights loaded."""
    return model_from_file(read_model_file(path), path)


def read_model_file(path: PathLike) -> dict:
    """`sosp.io.load_checkpoint` for a model file, naming a mask file passed in its place."""
    refuse_folder(path, (MODEL, PRUNED), "model")
    refuse_mask_file(path)
    return load_checkpoint(path)


def refuse_mask_file(path: PathLike) -> None:
    """Refuse a mask file where a model file belongs, saying which file to pass instead."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and "mask" in doc:
            raise BadInput(
                f"{path} is a mask (JSON), not a model file; pass the {PRUNED} written beside "
                f"it ({pruned(path.parent)}), or count the mask with `sosp count --mask {path}`"
            )


def model_from_file(ckpt: dict, path: PathLike = "the model file") -> nn.Module:
    """`load_model` for a model file already read with `sosp.io.load_checkpoint`."""
    check_model_file(ckpt, path)
    try:
        meta = data.info(ckpt["dataset"])
        net = models.create_widened(ckpt["model"], meta, ckpt.get("widths"))
        if ckpt.get("mask"):
            net = apply_mask(net, ckpt["mask"], meta.input_shape, ckpt.get("exclude"))
    except (KeyError, RuntimeError) as e:
        raise BadInput(
            f"{path} is not a model file written by sosp ({type(e).__name__}: {e})"
        ) from e
    load_state(net, ckpt["state_dict"], f"{path} ({ckpt['model']})")
    return net


def check_model_file(ckpt: dict, path: PathLike = "the model file") -> None:
    """Refuse, in one line saying what the file is and which to pass, a dict that is no model
    file: a training checkpoint (last.pt), a plain state dict, or another dict."""
    if isinstance(ckpt.get("model"), str) and "dataset" in ckpt and "state_dict" in ckpt:
        return
    where = Path(path).parent
    if {"epoch", "optimizer"} <= ckpt.keys():
        raise BadInput(
            f"{path} is a training checkpoint ({LAST_CHECKPOINT}: weights and optimizer state "
            f"for resuming), not a model file; pass {model(where)}, written when the run "
            "finishes"
        )
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise BadInput(
            f"{path} is not a model file written by sosp ({MODEL}, {PRUNED}) but a plain "
            f"state dict ({len(ckpt)} tensors, no model name or dataset); pass a model file, "
            f"or load these weights with `sosp prune --model NAME --checkpoint {path}`"
        )
    keys = ", ".join(sorted(map(str, ckpt))[:5]) or "none"
    raise BadInput(
        f"{path} is not a model file written by sosp ({MODEL}, {PRUNED}): it lacks "
        f"'model', 'dataset' or 'state_dict' (its keys: {keys})"
    )


def load_weights(net: nn.Module, path: PathLike, name: str = "the model") -> None:
    """Load the weights of `path` (a state dict, or a dict holding 'state_dict' such as a
    model file) into `net` (`name`: the model's name, for the message); a one-line error
    when they do not fit."""
    refuse_folder(path, (MODEL,), "checkpoint")
    ckpt = load_checkpoint(path)
    refuse_pruned(ckpt, path, name)
    load_state(net, ckpt.get("state_dict", ckpt), f"checkpoint {path}", name)


def refuse_pruned(ckpt: dict, path: PathLike, name: str = "the model") -> None:
    """Refuse a pruned network's model file (one with a mask) where dense weights belong,
    naming the dense file it was pruned from where the report beside it tells. Its surgery
    modules (`sosp.shortcuts`) do not trace, so a pruned network is not pruned again."""
    if not ckpt.get("mask"):
        return
    beside = report(Path(path).parent)
    try:
        found = json.loads(beside.read_text()) if beside.is_file() else {}
    except (OSError, ValueError):
        found = {}
    dense = found.get("checkpoint") or f"the dense {MODEL} it was pruned from"
    at = f" (this one was pruned at {found['ratio']:g})" if found.get("ratio") else ""
    raise BadInput(
        f"checkpoint {path} holds an already pruned {name}, not dense weights, and a pruned "
        f"network is not pruned again: prune {dense} at the total --ratio you want{at}, or "
        f"fine-tune this one with `sosp finetune --pruned {path}`"
    )


def load_state(net: nn.Module, state: dict, what: str, name: str = "the model") -> None:
    """`net.load_state_dict(state)`, with a mismatch told in one line: how many keys are
    missing, unexpected or of another shape, and the first few of each."""
    own = net.state_dict()
    if not isinstance(state, dict):
        raise BadInput(f"{what} holds no state dict")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        k
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = [
        f"{len(keys)} {kind} ({_first(keys)})"
        for kind, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("tensors of another shape", shapes),
        )
        if keys
    ]
    if parts:
        raise BadInput(
            f"{what} does not fit the model {name}: " + ", ".join(parts) + "; it holds the "
            "weights of another architecture or dataset (pass the --model and --dataset it was "
            "trained with)"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as e:  # e.g. a non-tensor value
        msg = str(e).splitlines()[0][:200]
        raise BadInput(f"{what} does not fit the model {name}: {msg}") from e


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def check_finite_weights(net: nn.Module, what: str) -> None:
    """Refuse weights with NaN or infinite entries, naming the first such parameter or buffer:
    every saliency computed from them would be meaningless."""
    for key, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise BadInput(
                f"{what} holds non-finite values: {key} has {bad} NaN or infinite entries of "
                f"{tensor.numel()}; the training diverged or the file is damaged (use an "
                "earlier or re-trained checkpoint)"
            )


# -- mask files (mask.json) ------------------------------------------------------------------


def save_mask(mask: Mask, path: PathLike, **meta) -> None:
    """Write `{**meta, "mask": mask}` as JSON, atomically; `sosp prune` passes the "model",
    "dataset", "input_shape" and "exclude" it belongs to (`check_mask_fits` reads them)."""
    atomic_write_text(path, json.dumps({**meta, "mask": mask}, indent=1))


def load_mask(path: PathLike) -> Mask:
    """The mask of a mask file written by `save_mask` or `sosp prune`: {layer: channels}."""
    return read_mask_file(path)["mask"]


def read_mask_file(path: PathLike) -> dict:
    """The whole mask file: {"mask": {layer: channels}, "model", "dataset", "exclude", ...}."""
    refuse_folder(path, (MASK,), "mask")
    try:
        doc = json.loads(Path(path).read_text())
        doc["mask"] = {str(k): [int(c) for c in v] for k, v in doc["mask"].items()}
        return doc
    except FileNotFoundError as e:
        raise BadInput(f"mask file {path} does not exist") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path} is not a mask file written by `sosp prune` ({e})") from e


def check_mask_fits(doc: dict, path: PathLike, model: str, meta: data.DatasetInfo) -> None:
    """Refuse a mask file (`read_mask_file`) computed for another model, dataset or input
    shape than `model` on `meta`, naming both; a key the file lacks (masks written before
    they were recorded) is not checked."""
    if doc.get("model") not in (None, model):
        raise BadInput(
            f"mask {path} belongs to {doc['model']}, not --model {model}; pass --model "
            f"{doc['model']}, or a mask that `sosp prune --model {model}` wrote"
        )
    if doc.get("dataset") not in (None, meta.name):
        raise BadInput(
            f"mask {path} was computed on {doc['dataset']}, not {meta.name}; pass --dataset "
            f"{doc['dataset']} (or leave --dataset out: the mask's dataset is used)"
        )
    shape = doc.get("input_shape")
    if shape is not None and list(shape) != list(meta.input_shape):
        raise BadInput(
            f"mask {path} is for inputs of shape {list(shape)}, not {meta.name}'s "
            f"{list(meta.input_shape)}; pass the dataset it was computed on"
        )
