"""`sosp.prune`: one call from a model and a few batches to a mask and a smaller model."""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sosp import batchnorm, counting, methods
from sosp.curvature import LOSSES, Batch
from sosp.errors import BadInput
from sosp.io import atomic_write_text
from sosp.selection import BUDGETS, Saliency, layer_caps, order, prefix_for_budget
from sosp.structures import StructureGraph, analyze
from sosp.surgery import Mask, build_pruned, indices_from_mask, mask_from_indices

SELECTION_OPTIONS = ("budget", "scope", "max_layer_fraction", "kernel_scaling")


@dataclass
class PruneResult:
    """mask: {layer: pruned channels}; model: the physically pruned copy; order: structures in
    the order chosen; scores: saliency per structure (score methods); report: counts, timing."""

    mask: Mask
    model: nn.Module
    order: list[tuple[str, int]]
    # saliency each structure was ranked by (Q_ss for SOSP-I; divided by the kernel side with
    # kernel_scaling)
    scores: dict[tuple[str, int], float] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def prune(
    model: nn.Module,
    method: str = "sosp_h",
    ratio: float = 0.5,
    data: Iterable[Batch] = (),
    loss: str = "cross_entropy",
    exclude: str | Sequence[str] | None = None,
    **settings,
) -> PruneResult:
    """Prune `ratio` of `model` by `method`, judged on the first `n_samples` samples of `data`.

    budget: what `ratio` is a fraction of: 'structures', 'params' or 'macs' (removed).
    scope: 'global' (one ranking over all layers) or 'local' (same fraction per layer).
    max_layer_fraction: at most this fraction of a layer's structures is pruned (e.g. 0.95).
    kernel_scaling: divide each saliency by its kernel's side length, 1, 3 or 7 (the paper's
        SOSP*; sqrt(k_h k_w) for a non-square kernel); `scores` are then the divided ones.
    recalibrate_bn: re-estimate BatchNorm running statistics on the pruning samples before
        computing saliencies (needed for an untrained network: pruning at initialization).
        The returned model carries the re-estimated statistics; the report gives the
        eval-mode logit standard deviation before and after.
    exclude: fnmatch patterns of layer names never pruned, or a preset ('resnet_downsample').
    Other keywords: n_samples (1000), seed, progress, and the method's own options (see
    `sosp.methods.options_of(method)`). The model passed in is left unchanged.
    """
    return prune_ratios(model, method, [ratio], data, loss, exclude, **settings)[0]


def prune_ratios(
    model: nn.Module,
    method: str,
    ratios: Sequence[float],
    data: Iterable[Batch] = (),
    loss: str = "cross_entropy",
    exclude: str | Sequence[str] | None = None,
    *,
    n_samples: int = 1000,
    budget: str = "structures",
    scope: str = "global",
    max_layer_fraction: float | None = None,
    kernel_scaling: bool = False,
    recalibrate_bn: bool = False,
    seed: int = 0,
    progress: bool = False,
    **options,
) -> list[PruneResult]:
    """`prune` at several ratios from one saliency computation: one result per ratio. Each
    report's `seconds` counts the shared saliency time plus its own selection and surgery."""
    start = time.perf_counter()
    fn = methods.get(method)
    known = methods.options_of(method)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BadInput(
            f"method {method!r} takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(known) or 'none'}"
        )
    if loss not in LOSSES:
        raise BadInput(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if budget not in BUDGETS:
        raise BadInput(f"budget must be one of {BUDGETS}, not {budget!r}")
    for ratio in ratios:
        if not 0 < ratio < 1:
            raise BadInput(f"ratio must lie in (0, 1), not {ratio}")
    batches = _materialize(data, n_samples)
    input_shape = tuple(batches[0][0].shape[1:])
    recalibration = None
    if recalibrate_bn:
        model = copy.deepcopy(model)  # the model passed in stays unchanged
        recalibration = batchnorm.recalibrate(model, batches)
    graph = analyze(model, input_shape, exclude)
    dense = counting.count(model, input_shape)

    ctx = methods.Context(model, graph, batches, loss, n_samples, seed, progress)
    saliency = fn(ctx, **options)
    saliency.check_finite(method)
    layer_of, sizes = _layer_index(graph)
    scale = _kernel_scale(graph) if kernel_scaling else None
    full = order(saliency, layer_of, layer_caps(sizes, max_layer_fraction), scope, scale)
    t_saliency = time.perf_counter() - start
    scores = _scores(graph, saliency, scale)
    settings = {
        "method": method,
        "options": options,
        "budget": budget,
        "scope": scope,
        "max_layer_fraction": max_layer_fraction,
        "kernel_scaling": kernel_scaling,
        "recalibrate_bn": recalibrate_bn,
        "bn_recalibration": recalibration,
        "loss": loss,
        "exclude": exclude,
        "n_samples": sum(len(x) for x, _ in batches),
        "structures": len(graph.structures),
    }
    results = []
    for ratio in ratios:
        t0 = time.perf_counter()
        pruned = prefix_for_budget(
            full,
            ratio,
            budget,
            len(graph.structures),
            lambda p: _removed(graph, p, dense, input_shape, budget),
        )
        small = build_pruned(graph, pruned)
        after = counting.count(small, input_shape)
        report = {
            **settings,
            "ratio": ratio,
            "pruned_structures": len(pruned),
            "before": dense.as_dict(),
            "after": after.as_dict(),
            "params_removed": 1 - after.params / dense.params,
            "macs_removed": 1 - after.macs / dense.macs,
            "seconds_saliency": t_saliency,
            "seconds": t_saliency + time.perf_counter() - t0,
        }
        results.append(
            PruneResult(
                mask_from_indices(graph, pruned),
                small,
                [graph.structures[i] for i in pruned],
                scores,
                report,
            )
        )
    return results


def _materialize(data: Iterable[Batch], n_samples: int) -> list[Batch]:
    """The batches holding the first `n_samples` samples, as a list (read more than once)."""
    if n_samples < 1:
        raise BadInput(f"n_samples must be at least 1, not {n_samples}")
    out, seen = [], 0
    for x, y in data:
        if seen >= n_samples:
            break
        out.append((x[: n_samples - seen], y[: n_samples - seen]))
        seen += len(out[-1][0])
    if not out:
        raise BadInput("no data to prune on: pass data=an iterable of (inputs, labels) batches")
    return out


def _layer_index(graph: StructureGraph) -> tuple[torch.Tensor, list[int]]:
    """(layer number of each structure [S], number of structures per layer)."""
    groups = graph.layer_structures()
    layer_of = torch.empty(len(graph.structures), dtype=torch.long)
    for k, idx in enumerate(groups.values()):
        layer_of[idx] = k
    return layer_of, [len(idx) for idx in groups.values()]


def _kernel_scale(graph: StructureGraph) -> torch.Tensor:
    """[S] 1 / kernel side of each structure's layer (1, 1/3, 1/7: the paper's SOSP*)."""
    return torch.tensor(
        [1.0 / graph.layers[name].kernel_side for name, _ in graph.structures], dtype=torch.float64
    )


def _removed(
    graph: StructureGraph,
    pruned: list[int],
    dense: counting.Counts,
    input_shape: tuple[int, ...],
    budget: str,
) -> float:
    c = counting.count(build_pruned(graph, pruned), input_shape)
    return 1 - (c.params / dense.params if budget == "params" else c.macs / dense.macs)


def _scores(
    graph: StructureGraph, saliency: Saliency, scale: torch.Tensor | None
) -> dict[tuple[str, int], float]:
    """Structure -> the saliency it was ranked by: the score, or Q_ss for SOSP-I (times
    `scale` with kernel scaling)."""
    values = saliency.scores if saliency.scores is not None else saliency.q.diagonal()
    values = values.double().cpu()
    if scale is not None:
        values = values * scale
    return dict(zip(graph.structures, values.tolist(), strict=True))


# --------------------------------------------------------------------------------------------
# masks on disk


def save_mask(mask: Mask, path: str | os.PathLike, **meta) -> None:
    """Write `{"mask": mask, **meta}` as JSON, atomically."""
    atomic_write_text(path, json.dumps({**meta, "mask": mask}, indent=1))


def load_mask(path: str | os.PathLike) -> Mask:
    """The mask of a mask.json written by `save_mask` or `sosp prune`."""
    return read_mask_file(path)["mask"]


def read_mask_file(path: str | os.PathLike) -> dict:
    """The whole mask.json: {"mask": {layer: channels}, "model", "dataset", "exclude", ...}."""
    try:
        doc = json.loads(Path(path).read_text())
        doc["mask"] = {str(k): [int(c) for c in v] for k, v in doc["mask"].items()}
        return doc
    except FileNotFoundError as e:
        raise BadInput(f"mask file {path} does not exist") from e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadInput(f"{path} is not a mask file written by `sosp prune` ({e})") from e


def apply_mask(
    model: nn.Module,
    mask: Mask,
    input_shape: Sequence[int],
    exclude: str | Sequence[str] | None = None,
) -> nn.Module:
    """The physically pruned copy of `model` for `mask` (e.g. a fresh model of the same
    architecture, or a trained one). `model` is left unchanged."""
    graph = analyze(model, input_shape, exclude)
    return build_pruned(graph, indices_from_mask(graph, mask))


def model_file(model_name: str, dataset: str, net: nn.Module, **extra) -> dict:
    """The on-disk form of a network (pruned.pt, model.pt): enough to rebuild the architecture
    (zoo name, dataset, and for a pruned one its mask and exclude) plus the weights."""
    return {"model": model_name, "dataset": dataset, **extra, "state_dict": net.state_dict()}


def load_pruned(path: str | os.PathLike) -> nn.Module:
    """The network of a model file (pruned.pt from `sosp prune`, model.pt from `sosp train` or
    `sosp finetune`): the architecture is rebuilt from its model name, dataset and mask (none:
    the dense network), then its weights are loaded."""
    from sosp.io import load_checkpoint

    return model_from_file(load_checkpoint(path), path)


def model_from_file(ckpt: dict, path: str | os.PathLike = "the model file") -> nn.Module:
    """`load_pruned` for a model file already read with `sosp.io.load_checkpoint`."""
    from sosp import data, models

    try:
        meta = data.info(ckpt["dataset"])
        model = models.create(ckpt["model"], meta.num_classes, meta.in_channels, meta.image_size)
        if ckpt.get("mask"):
            model = apply_mask(model, ckpt["mask"], meta.input_shape, ckpt.get("exclude"))
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise BadInput(
            f"{path} is not a model file written by sosp ({type(e).__name__}: {e})"
        ) from e
    return model
