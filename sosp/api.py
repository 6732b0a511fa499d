"""`sosp.prune`: one call from a model and a few batches to a mask and a smaller model."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.utils.data import Dataset, IterableDataset

from sosp import batchnorm, counting, latency, methods
from sosp.curvature import BATCH_HINT, Batch, check_targets, first_samples
from sosp.errors import BadInput
from sosp.latency_budget import Unreachable, select
from sosp.latency_table import LatencyModel, LatencyTable
from sosp.selection import Saliency, layer_caps, order, prefix_for_budget, rounded, shuffled
from sosp.settings import PruneSettings, check_ratios
from sosp.structures import StructureGraph, analyze, check_model, check_runs
from sosp.surgery import Mask, build_pruned, indices_from_mask, mask_from_indices
from sosp.timing import StepTimer


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
    **kwargs,
) -> PruneResult:
    """Prune `ratio` of `model` by `method`, judged on the first `n_samples` samples of `data`
    (an iterable of (inputs, labels) batches).

    `model`: an `nn.Module` returning logits [B, D] (the network itself, not its
    `DataParallel` wrapper). `data`: e.g. a DataLoader, or [(x, y)]; labels are class indices
    [B] in 0..D-1 or float targets [B, D]. Methods that differentiate the loss with respect to
    the pruned layers' parameters (c_obd, the gradient-flow ones) need those to require grad;
    frozen layers that are excluded, and the classifier, may stay frozen (SOSP-I and SOSP-H
    differentiate with respect to gates and prune a frozen model).
    Anything else stops with one `BadInput` line saying how to fix it, before any saliency.

    `ratio` is a fraction, in (0, 1), of the `budget` quantity removed. `loss`, `exclude` and
    every other keyword that names a `sosp.settings.PruneSettings` field (n_samples, budget,
    scope, ...: see there for each one's meaning and default) are the settings; `progress`
    shows progress bars; the remaining keywords are the method's own options (see
    `sosp.methods.options_of(method)`). The model passed in is left
    unchanged; with recalibrate_bn (unset: when every BatchNorm still has its initial
    statistics, an untrained network) the returned model carries the re-estimated BatchNorm
    statistics and the report their eval-mode logit standard deviation before and after.
    """
    return prune_ratios(model, method, [ratio], data, loss, exclude, **kwargs)[0]


def prune_ratios(
    model: nn.Module,
    method: str,
    ratios: Sequence[float],
    data: Iterable[Batch] = (),
    loss: str = "cross_entropy",
    exclude: str | Sequence[str] | None = None,
    *,
    progress: bool = False,
    **kwargs,
) -> list[PruneResult]:
    """`prune` at several ratios from one saliency computation: one result per ratio."""
    settings, options = PruneSettings.split({"loss": loss, "exclude": exclude, **kwargs})
    return prune_with(model, method, ratios, data, settings, options, progress)


@torch.inference_mode(False)  # the saliencies differentiate, whatever the caller's grad mode
@torch.enable_grad()
def prune_with(
    model: nn.Module,
    method: str,
    ratios: Sequence[float],
    data: Iterable[Batch],
    settings: PruneSettings,
    options: dict | None = None,
    progress: bool = False,
) -> list[PruneResult]:
    """`prune_ratios` with its settings as one `PruneSettings` and the method's options as a
    dict. Each report's `seconds` counts the shared saliency time plus its own selection and
    surgery."""
    start = time.perf_counter()
    _check_model(model)
    options = methods.registry.checked_options(method, options or {})
    if not ratios:
        raise BadInput("no ratio to prune at: pass at least one ratio in (0, 1), e.g. [0.5]")
    check_ratios(ratios)
    batches = _materialize(data, settings.n_samples)
    timer = StepTimer(_device_of(model))
    with timer.step("recalibration"):
        model, recalibration = _recalibrated(model, batches, settings.recalibrate_bn)
    ranking = _rank(model, method, options, batches, settings, progress, timer)
    shared = _shared_report(method, options, settings, recalibration, batches, ranking)
    seconds = time.perf_counter() - start
    return [_prune_at(ranking, ratio, settings, shared, seconds, timer.copy()) for ratio in ratios]


def _check_model(model: nn.Module) -> None:
    """`structures.check_model`, and parameters that hold values (not on the meta device)
    that autograd may use (not made under inference mode)."""
    check_model(model)
    if any(p.is_meta for p in model.parameters()):
        raise BadInput(
            "the model's parameters are on the meta device and hold no values; materialize "
            "them first (model.to_empty(device='cpu'), then load_state_dict(...))"
        )
    if any(p.is_inference() for p in model.parameters()):
        raise BadInput(
            "the model was created under torch.inference_mode, so autograd cannot use its "
            "parameters; create (or load) it outside that mode, or use torch.no_grad there"
        )


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class _Ranking:
    """A network's structures ranked once; each ratio's mask is a prefix of `order`."""

    graph: StructureGraph
    order: list[int]  # structure indices, the first pruned first
    scores: dict[tuple[str, int], float]  # the saliency each structure was ranked by
    dense: counting.Counts  # of the unpruned network
    input_shape: tuple[int, ...]  # of one sample, e.g. (3, 32, 32)
    layer_of: list[int]  # [S] the layer number of each structure
    sizes: list[int]  # structures per layer
    exchangeable: list[list[tuple[int, ...]]] | None  # with shuffle_within_layers
    saliency: Saliency  # what the method computed (a latency budget selects from it)
    caps: torch.Tensor  # [layers] the most structures each may lose
    scale: torch.Tensor | None  # [S] with kernel_scaling
    latency: LatencyModel | None  # with a latency table


def _recalibrated(
    model: nn.Module, batches: list[Batch], recalibrate: bool | None
) -> tuple[nn.Module, dict | None]:
    """(`model`, None), or with `recalibrate` (None: where every BatchNorm has its initial
    statistics) a copy of `model` with BatchNorm statistics re-estimated on `batches`, and
    what the re-estimation changed and why it ran ("asked" or "initial statistics")."""
    why = "asked"
    if recalibrate is None:
        recalibrate, why = batchnorm.has_initial_statistics(model), "initial statistics"
    if not recalibrate:
        return model, None
    check_runs(model, tuple(batches[0][0].shape[1:]))  # one line, not the model's error
    model = copy.deepcopy(model)  # the model passed in stays unchanged
    return model, {**batchnorm.recalibrate(model, batches), "because": why}


def _rank(
    model: nn.Module,
    method: str,
    options: dict,
    batches: list[Batch],
    settings: PruneSettings,
    progress: bool,
    timer: StepTimer,
) -> _Ranking:
    """The structures of `model` in the order `method` prunes them under `settings`."""
    input_shape = tuple(batches[0][0].shape[1:])
    table = _table(settings, model)
    with timer.step("tracing"):
        graph = analyze(model, input_shape, settings.exclude, settings.coupling)
    check_targets(batches, _classes(model, graph))
    predictor = LatencyModel(table, graph, input_shape) if table else None
    with timer.step("counting"):
        dense = counting.count(graph.gm, input_shape)  # what eval runs (no aux heads)
    ctx = methods.Context(
        model, graph, batches, settings.loss, settings.n_samples, settings.seed, progress
    )
    with timer.step("saliency"):
        saliency = methods.get(method)(ctx, **options)
        saliency.check_finite(method)
    with timer.step("selection"):
        layer_of, sizes = layer_index(graph)
        scale = _kernel_scale(graph) if settings.kernel_scaling else None
        caps = layer_caps(sizes, settings.max_layer_fraction)
        full = order(saliency, layer_of, caps, settings.scope, scale)
        exchangeable = graph.exchangeable() if settings.shuffle_within_layers else None
    scores = _scores(graph, saliency, scale)
    return _Ranking(
        graph,
        full,
        scores,
        dense,
        input_shape,
        layer_of.tolist(),
        sizes,
        exchangeable,
        saliency,
        caps,
        scale,
        predictor,
    )


def _table(settings: PruneSettings, model: nn.Module) -> LatencyTable | None:
    """The latency table of `settings`, checked against the device `model` is on: a latency
    holds only where it was measured."""
    if settings.latency_table is None:
        return None
    table = LatencyTable.load(settings.latency_table)
    table.check_device(_device_of(model), f"latency table {settings.latency_table}")
    return table


def _shared_report(
    method: str,
    options: dict,
    settings: PruneSettings,
    recalibration: dict | None,
    batches: list[Batch],
    ranking: _Ranking,
) -> dict:
    """The report entries every ratio shares: the method and settings, and what was done."""
    return {
        "method": method,
        "options": options,
        "budget": settings.budget,
        "scope": settings.scope,
        "max_layer_fraction": settings.max_layer_fraction,
        "kernel_scaling": settings.kernel_scaling,
        "coupling": settings.coupling,
        "round_to": settings.round_to,
        "latency_table": settings.latency_table,
        "shuffle_within_layers": settings.shuffle_within_layers,
        "recalibrate_bn": recalibration is not None,
        "bn_recalibration": recalibration,
        "loss": settings.loss,
        "exclude": settings.exclude_list,
        "n_samples": sum(len(x) for x, _ in batches),
        "structures": len(ranking.graph.structures),
    }


def _prune_at(
    ranking: _Ranking,
    ratio: float,
    settings: PruneSettings,
    shared: dict,
    seconds_saliency: float,
    timer: StepTimer,
) -> PruneResult:
    """The result at one ratio: the shortest prefix of the ranking that removes `ratio` of
    the `settings.budget` quantity (rounded per layer with `round_to`; with
    `shuffle_within_layers`, as many structures of each layer drawn at random), as a mask, a
    pruned network and a report (`seconds_saliency`: the shared time spent ranking; `timer`
    holds the shared steps and gets this ratio's)."""
    t0 = time.perf_counter()
    graph, dense, input_shape = ranking.graph, ranking.dense, ranking.input_shape
    with timer.step("selection"):  # for params/MACs budgets, counts candidate networks
        pruned = _selected(ranking, ratio, settings)
    corrections, measured = [], None
    if settings.budget == "latency" and settings.latency_corrections:
        with timer.step("latency"):
            pruned, corrections, measured = _corrected(ranking, pruned, ratio, settings)
    unshuffled = None
    if ranking.exchangeable is not None:
        with timer.step("counting"):
            unshuffled = _removed_both(graph, pruned, dense, input_shape)
        with timer.step("selection"):
            pruned = shuffled(pruned, ranking.exchangeable, settings.seed)
    with timer.step("surgery"):
        small = build_pruned(graph, pruned)
    with timer.step("counting"):
        after = counting.count(small, input_shape)
    latency_report = None
    if ranking.latency is not None:
        with timer.step("latency"):
            if unshuffled is not None:  # the shuffled network is another one
                measured = None
            latency_report = _latency_report(
                ranking, pruned, small, ratio, settings, measured, corrections
            )
    report = {
        **shared,
        "ratio": ratio,
        "pruned_structures": len(pruned),
        "before": dense.as_dict(),
        "after": after.as_dict(),
        "params_removed": 1 - after.params / dense.params,
        "macs_removed": 1 - after.macs / dense.macs,
        "unshuffled": unshuffled,
        "latency": latency_report,
        "channels": _channels(graph, pruned),
        "seconds_saliency": seconds_saliency,
        "seconds": seconds_saliency + time.perf_counter() - t0,
        "seconds_by_step": timer.rounded(),
    }
    if timer.count_ops:  # under `sosp.op_count.count_steps`
        report["ops_by_step"] = dict(timer.ops)
    return PruneResult(
        mask_from_indices(graph, pruned),
        small,
        [graph.structures[i] for i in pruned],
        ranking.scores,
        report,
    )


def _selected(ranking: _Ranking, ratio: float, settings: PruneSettings) -> list[int]:
    """The structures pruned at `ratio` of the budget: with a latency budget and global scope
    the latency knapsack (`latency_budget.select`), else the shortest prefix of the order."""
    graph, budget, k = ranking.graph, settings.budget, settings.round_to
    if budget == "latency" and settings.scope == "global":
        layers = graph.selection_groups()  # as ranking.caps: layers, split into pieces
        target = (1 - ratio) * ranking.latency.table.dense_ms
        return select(
            ranking.saliency, ranking.latency, layers, ranking.caps, target, k, ranking.scale
        )
    if budget == "latency":
        dense_ms = ranking.latency.table.dense_ms
        removed = lambda p: 1 - ranking.latency.predict(p) / dense_ms  # noqa: E731
    else:
        removed = lambda p: removed_fraction(  # noqa: E731
            graph, p, ranking.dense, ranking.input_shape, budget
        )
    return prefix_for_budget(
        ranking.order,
        ratio,
        budget,
        len(graph.structures),
        removed,
        None if k is None else lambda p: rounded(p, ranking.layer_of, ranking.sizes, k),
    )


CORRECTION_TOLERANCE = 0.03  # of the latency asked for: close enough, no more corrections


def _corrected(
    ranking: _Ranking, pruned: list[int], ratio: float, settings: PruneSettings
) -> tuple[list[int], list[dict], dict[str, float]]:
    """(the structures pruned, each network timed on the way, the chosen one's measurement):
    the pruned network timed against the dense one and, while its measured fraction of the
    dense latency is more than `CORRECTION_TOLERANCE` off the one asked for (1 - ratio),
    selected again (at most `settings.latency_corrections` times) for the table's target of
    `_next_target`; past the fastest network the table knows, that one. Where several were
    timed, they are timed again together, in turn with the dense one (`final_fraction`: the
    machine's speed changes what each measures, so they are compared in the same moments),
    and the one closest to the fraction asked for is chosen; its entry says `chosen`."""
    asked = target = 1 - ratio
    dense_ms = ranking.latency.table.dense_ms
    rounds, masks, networks = [], [], []
    while True:
        networks.append(build_pruned(ranking.graph, pruned))
        masks.append(pruned)
        (measured,) = _measured_ms(ranking, networks[-1:])
        fraction = measured["pruned"] / measured["dense"]
        predicted = ranking.latency.predict(pruned) / dense_ms
        rounds.append(
            {"target": target, "predicted_fraction": predicted, "measured_fraction": fraction}
        )
        if abs(fraction / asked - 1) <= CORRECTION_TOLERANCE:
            break
        if len(rounds) > settings.latency_corrections:
            break
        target = _next_target(rounds, asked)
        try:
            pruned = _selected(ranking, 1 - target, settings)
        except Unreachable as e:  # the table predicts nothing that fast: its fastest
            if e.fastest_ms / dense_ms >= rounds[-1]["predicted_fraction"] * (1 - 1e-9):
                break  # no faster than the network just timed
            target = e.fastest_ms / dense_ms * (1 + 1e-9)
            pruned = _selected(ranking, 1 - target, settings)
    final = _measured_ms(ranking, networks) if len(networks) > 1 else [measured]
    for entry, m in zip(rounds, final, strict=True):
        entry["final_fraction"] = m["pruned"] / m["dense"]
    best = min(range(len(rounds)), key=lambda i: abs(rounds[i]["final_fraction"] / asked - 1))
    for i, entry in enumerate(rounds):
        entry["chosen"] = i == best
    return masks[best], rounds, final[best]


def _next_target(rounds: list[dict], asked: float) -> float:
    """The table's next target (a fraction of its dense ms) for a measured fraction `asked`:
    the last target times asked/measured; where the measurement grew with the target over the
    last two rounds, the line through their (target, measured) pairs instead (the secant),
    but at most twice as far from the last target (a noisy measurement flattens the line);
    within [1e-3, 1]."""
    t1, m1 = rounds[-1]["target"], rounds[-1]["measured_fraction"]
    target = t1 * asked / m1
    if len(rounds) > 1:
        t0, m0 = rounds[-2]["target"], rounds[-2]["measured_fraction"]
        if (t1 - t0) * (m1 - m0) > 0:
            reach = 2 * abs(target - t1)
            secant = t1 + (asked - m1) * (t1 - t0) / (m1 - m0)
            target = min(max(secant, t1 - reach), t1 + reach)
    return min(max(target, 1e-3), 1.0)


MEASURED_CALLS = 30  # of each network, in turn: the fastest counts


def _measured_ms(ranking: _Ranking, networks: list[nn.Module]) -> list[dict[str, float]]:
    """Per pruned network, {"dense": ms, "pruned": ms}: the dense network and these timed in
    turn, the fastest of `MEASURED_CALLS` calls each, in the table's precision, layout and
    batch (the more calls, the likelier all catch the machine's least disturbed moments)."""
    on = ranking.latency.table.measured_on
    device = _device_of(networks[0])
    forwards = [
        latency.deployed(copy.deepcopy(m), device, on["precision"], on["layout"], on["fold_bn"])
        for m in [ranking.graph.gm, *networks]
    ]
    dtype = next(networks[0].parameters()).dtype
    x = latency.sample_input((on["batch"], *ranking.input_shape), device, on["layout"], dtype)
    calls = [functools.partial(forward, x) for forward in forwards]
    dense, *pruned = latency.interleaved_calls_ms(calls, device, MEASURED_CALLS, warmup=3)
    return [{"dense": dense, "pruned": ms} for ms in pruned]


def _latency_report(
    ranking: _Ranking,
    pruned: list[int],
    small: nn.Module,
    ratio: float,
    settings: PruneSettings,
    measured: dict[str, float] | None = None,
    corrections: Sequence[dict] = (),
) -> dict:
    """The pruned network's latency as the table predicts it and as measured (`measured`, or
    now: `_measured_ms`), beside the dense network's, in ms; with `corrections` (`_corrected`),
    the networks timed on the way, and where the chosen one was selected again, its
    prediction corrected as its selection was (times measured/predicted of the network
    before it, `speedup_predicted_corrected`)."""
    table = ranking.latency.table
    on = table.measured_on
    measured = measured or _measured_ms(ranking, [small])[0]
    predicted = ranking.latency.predict(pruned)
    chosen = next((i for i, c in enumerate(corrections) if c["chosen"]), 0)
    corrected = None
    if chosen > 0:
        before = corrections[chosen - 1]
        corrected = predicted * before["measured_fraction"] / before["predicted_fraction"]
    return {
        "measured_on": on,
        "requested_removed": ratio if settings.budget == "latency" else None,
        "dense_table_ms": table.dense_ms,
        "predicted_ms": predicted,
        "predicted_removed": 1 - predicted / table.dense_ms,
        "dense_ms": measured["dense"],
        "measured_ms": measured["pruned"],
        "measured_removed": 1 - measured["pruned"] / measured["dense"],
        "speedup_predicted": table.dense_ms / predicted,
        "speedup_measured": measured["dense"] / measured["pruned"],
        "speedup_predicted_corrected": None if corrected is None else table.dense_ms / corrected,
        "corrections": list(corrections),
    }


def _channels(graph: StructureGraph, pruned: list[int]) -> dict[str, list[int]]:
    """{layer: [channels kept, channels before]} for every prunable layer."""
    mask = mask_from_indices(graph, pruned)
    return {
        name: [layer.out_channels - len(mask.get(name, [])), layer.out_channels]
        for name, layer in graph.layers.items()
        if layer.prunable
    }


def _classes(model: nn.Module, graph: StructureGraph) -> int:
    """D, the width of the logits [B, D] that `model` returns (`graph` traced from it);
    `BadInput` for any other output."""
    out = next(n for n in reversed(graph.gm.graph.nodes) if n.op == "output")
    meta = out.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata) and len(meta.shape) == 2:
        return meta.shape[1]
    if isinstance(meta, TensorMetadata):
        what = f"a tensor of shape {tuple(meta.shape)} for one sample"
    elif isinstance(meta, dict):
        what = f"a dict (keys {', '.join(map(repr, meta))})"
    else:
        what = f"a {type(meta).__name__}" if meta is not None else "no tensor"
    raise BadInput(
        f"{type(model).__name__} returns {what}; sosp prunes a classifier returning logits "
        "[batch, classes]: wrap it so that forward returns that one tensor (e.g. out['logits'] "
        "or out[0])"
    )


def _materialize(data: Iterable[Batch], n_samples: int) -> list[Batch]:
    """The batches holding the first `n_samples` samples, as a list (read more than once)."""
    _check_iterable_of_batches(data)
    out = list(first_samples(data, n_samples))
    if not out:
        raise BadInput("no data to prune on: pass data=an iterable of (inputs, labels) batches")
    return out


def _check_iterable_of_batches(data: object) -> None:
    """Refuse, before reading it, data that is not an iterable of batches but a map-style
    dataset (of single samples), a tensor, or one (inputs, labels) batch."""
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        raise BadInput(
            f"data is a dataset ({type(data).__name__}) of single samples; {BATCH_HINT}: "
            "pass data=torch.utils.data.DataLoader(dataset, batch_size=100)"
        )
    if isinstance(data, torch.Tensor):
        raise BadInput(
            f"data is one tensor of shape {tuple(data.shape)}; {BATCH_HINT}: pass data=[(x, y)] "
            "with the labels y, or a DataLoader"
        )
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        raise BadInput(
            "data is one batch (a sequence of tensors), not an iterable of batches; "
            "pass data=[(x, y)]"
        )


def layer_index(graph: StructureGraph) -> tuple[torch.Tensor, list[int]]:
    """(group number of each structure [S], number of structures per group): what
    `selection.order` and `layer_caps` take (also for pruning in rounds, `sosp.rounds`). A
    group is a layer's structures, or a part of them that another layer reads alone (a piece
    of a split: `StructureGraph.selection_groups`), so each keeps at least one."""
    groups = graph.selection_groups()
    layer_of = torch.empty(len(graph.structures), dtype=torch.long)
    for k, idx in enumerate(groups):
        layer_of[idx] = k
    return layer_of, [len(idx) for idx in groups]


def _kernel_scale(graph: StructureGraph) -> torch.Tensor:
    """[S] 1 / kernel side of each structure's layer (1, 1/3, 1/7: the paper's SOSP*)."""
    return torch.tensor(
        [1.0 / graph.layers[name].kernel_side for name, _ in graph.structures], dtype=torch.float64
    )


def removed_fraction(
    graph: StructureGraph,
    pruned: list[int],
    dense: counting.Counts,
    input_shape: tuple[int, ...],
    budget: str,
) -> float:
    c = counting.count(build_pruned(graph, pruned), input_shape)
    return 1 - (c.params / dense.params if budget == "params" else c.macs / dense.macs)


def _removed_both(
    graph: StructureGraph, pruned: list[int], dense: counting.Counts, input_shape: tuple[int, ...]
) -> dict[str, float]:
    """{params_removed, macs_removed} of mask `pruned` (the method's, before a shuffle)."""
    c = counting.count(build_pruned(graph, pruned), input_shape)
    return {"params_removed": 1 - c.params / dense.params, "macs_removed": 1 - c.macs / dense.macs}


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
