"""A latency lookup table: what each operation of a network costs on one device at each count
of kept channels, measured once, so that a mask's latency is predicted without building it.

HALP's table (Shen et al., NeurIPS 2022), over every operation of the traced graph whose
channels pruning can change: a conv or linear layer is measured over a grid of (kept input,
kept output) channels; any other operation (BatchNorm, activation, pooling, a depthwise conv)
over its kept input channels, its output following; a residual sum of two tensors as surgery
builds it (`LatencyTable.sum_ms`): a plain add over its kept channels, and over (kept
channels of an operand, kept channels of the sum) an `IndexAdd` of the operand into the
stream and a `ChannelScatter` of it into the sum's channels. Each is measured in isolation:
the operation rebuilt for those channels by its channel rule's `shrink` (or, for a function,
called on inputs of those channels), on random inputs of the batch, in the table's precision
and layout (bf16 activations under bf16 autocast); every grid point of an operation and the
whole dense network are timed in turn for `repeats` rounds, the fastest call of each counting
(`latency.interleaved_calls_ms`), and each operation's times are scaled by the dense
network's median over all operations' rounds over its time in this operation's rounds (a
shared machine's speed drifts between operations). Operations alike (the same module, shapes
and arguments) share one grid. With `fold_bn` (the default) the network is timed as deployed,
each BatchNorm after a conv folded into it, and those BatchNorms cost nothing.

Operations in isolation do not sum to the network: in place, an operation reads what the last
one wrote (a narrow network's activations stay in cache, a wide one's do not), and an isolated
call carries the timer's own cost. So the sum is calibrated on whole networks (`calibrate`):
uniformly pruned ones (every layer at 3/4, 1/2, 1/4, 1/8 of its structures, coupled streams
shrunk too) and, for each activation size holding at least 5% of the time, networks with only
the layers writing that size narrowed (to 1/2 and 1/4), each timed against the dense one. A
factor a_g per activation size g and an offset c are fitted by least squares:

    predicted(mask) = dense_ms * (c + S(mask)) / (c + S(dense)),
    S = sum over operations of a_g(op) * op_ms(kept in, kept out),

with kept counts between grid points interpolated linearly. The grid holds 1, every multiple
of `step` and the full count; `step` is the device's channel granularity
(`benchmarks/channel_steps.py` finds it: flat stretches of a conv's time as its channels
shrink), coarsened so that no grid has more than `MAX_POINTS` points.

`LatencyModel` predicts a mask's latency from a table, updated structure by structure: each
tensor's kept channel count (a channel stays while any of its writers is alive) and each
operation's time at its kept counts.

A table is JSON (`save`, `load`) holding what it was measured on; `check_device` refuses one
measured on another device, thread count or torch version, and `check_network` one measured on
another network.
"""

from __future__ import annotations

import copy
import math
import statistics
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from sosp import latency
from sosp.channel_rules import AddRule, module_rule, op_rule
from sosp.errors import BadInput
from sosp.io import atomic_write_json, read_json
from sosp.shortcuts import ChannelScatter, IndexAdd
from sosp.structures import StructureGraph, analyze
from sosp.surgery import build_pruned

FORMAT = 2  # 2: residual sums timed as surgery builds them (IndexAdd, ChannelScatter)
MAX_POINTS = 17  # per grid dimension
INDEX_ADD = " | IndexAdd"  # a sum's grids beside its plain add's: [kept operand][kept out]
SCATTER = " | ChannelScatter"


@dataclass
class OpTable:
    """One operation's ms at each grid point: `ms[i][j]` at `inputs[i]` kept input
    channels and `outputs[j]` kept outputs (`outputs` None: one column, the output follows
    the input)."""

    inputs: list[int]
    outputs: list[int] | None
    ms: list[list[float]]

    def at(self, kept_in: int, kept_out: int) -> float:
        """ms at (kept_in, kept_out), linear between grid points (bilinear on a 2-d grid)."""
        i, wi = _bracket(self.inputs, kept_in)
        if self.outputs is None:
            return _mix(self.ms[i][0], self.ms[i + 1][0] if wi else 0.0, wi)
        j, wj = _bracket(self.outputs, kept_out)
        row = [_mix(r[j], r[j + 1] if wj else 0.0, wj) for r in self.ms[i : i + 2]]
        return _mix(row[0], row[1] if wi else 0.0, wi)


def _bracket(grid: list[int], k: int) -> tuple[int, float]:
    """(i, w): k lies at grid[i] + w * (grid[i+1] - grid[i]), clamped to the grid."""
    if k <= grid[0]:
        return 0, 0.0
    if k >= grid[-1]:
        return len(grid) - 1, 0.0
    i = bisect_right(grid, k) - 1
    return i, (k - grid[i]) / (grid[i + 1] - grid[i])


def _mix(a: float, b: float, w: float) -> float:
    return a if w == 0 else (1 - w) * a + w * b


@dataclass
class NodeEntry:
    """An operation of the table's network: its grid `op`, the tensor node its input channels
    are counted on (`input`; None: none vary), and its dense channel counts."""

    op: str
    input: str | None
    in_channels: int
    out_channels: int
    group: str = ""  # its output's activation size (e.g. "32x32"): operations calibrated alike
    other: str | None = None  # a residual sum's second operand (None: it keeps every channel)
    sum: bool = False  # a residual sum of two tensors (`sum_ms`)


@dataclass
class LatencyTable:
    """Per-operation latency grids of one network on one device (module docstring)."""

    measured_on: dict  # latency.measured_on(...)
    input_shape: list[int]  # of one sample
    step: int
    dense_ms: float  # the whole dense network, measured
    ops: dict[str, OpTable]
    nodes: dict[str, NodeEntry]
    ops_dense_ms: float = 0.0  # the operations' isolated times summed at full width
    offset_ms: float = 0.0  # fitted to whole pruned networks (`calibrate`)
    group_factors: dict[str, float] = field(default_factory=dict)  # group -> in place/isolated
    calibration: list[dict] = field(default_factory=list)  # what the offset was fitted to
    unmodeled: dict[str, str] = field(default_factory=dict)  # node -> why it has no grid
    network: dict = field(default_factory=dict)  # what the caller says it is (model, widths)

    # -- prediction ----------------------------------------------------------------------------

    def node_ms(self, node: str, kept: Callable[[str], int]) -> float:
        """The operation's grid at its kept counts (`kept(tensor_node)`: a tensor's kept
        channels), times its group's calibrated factor."""
        entry = self.nodes[node]
        kin = kept(entry.input) if entry.input is not None else entry.in_channels
        if entry.sum:
            kother = kept(entry.other) if entry.other is not None else entry.in_channels
            ms = self.sum_ms(entry.op, kin, kother, kept(node))
        else:
            ms = self.ops[entry.op].at(kin, kept(node))
        return ms * self.group_factors.get(entry.group, 1.0)

    def sum_ms(self, op: str, first: int, second: int, out: int) -> float:
        """A residual sum of operands keeping `first` and `second` of its `out` channels, as
        surgery builds it (`channel_rules.AddRule`): a plain add where both keep them all; else
        the operand that keeps them all (or the first, scattered into them) takes the other in
        by an `IndexAdd`."""
        if first == out and second == out:
            return self.ops[op].at(out, out)
        if first == out or second == out:
            return self.ops[op + INDEX_ADD].at(min(first, second), out)
        return self.ops[op + SCATTER].at(first, out) + self.ops[op + INDEX_ADD].at(second, out)

    def ops_ms(self, kept: Callable[[str], int]) -> float:
        """The operations' isolated ms summed, `kept(tensor_node)` giving each tensor's kept
        channels."""
        return sum(self.node_ms(name, kept) for name in self.nodes)

    def predicted_ms(self, ops_ms: float) -> float:
        """The whole network's ms for operations summing to `ops_ms` in isolation:
        dense_ms * (offset + ops_ms) / (offset + ops_dense_ms)."""
        share = (self.offset_ms + ops_ms) / (self.offset_ms + self.ops_dense_ms)
        return self.dense_ms * max(share, 0.0)

    # -- files ---------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"format": FORMAT, **asdict(self)})

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """The table at `path`; `BadInput` naming `sosp latency-table` for a file that is
        missing, unreadable or not a whole table of this format."""
        try:
            doc = read_json(path)
        except BadInput as e:
            raise BadInput(f"{e}; or make it with sosp latency-table") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BadInput(
                f"{path} is not a latency table of this sosp version (format {FORMAT}); make it "
                "again with sosp latency-table"
            )
        try:
            doc.pop("format")
            doc["ops"] = {k: OpTable(**v) for k, v in doc["ops"].items()}
            doc["nodes"] = {k: NodeEntry(**v) for k, v in doc["nodes"].items()}
            return cls(**doc)
        except (KeyError, TypeError, AttributeError) as e:
            raise BadInput(
                f"{path} is not a complete latency table ({e}); make it again with "
                "sosp latency-table"
            ) from e

    # -- checks --------------------------------------------------------------------------------

    def check_device(self, device: torch.device | str, what: str = "the latency table") -> None:
        """Refuse a table measured on another device, thread count or torch version than
        `device` here has: its times would not hold."""
        here = {"device_name": latency.device_name(device), "torch": torch.__version__}
        for key, value in here.items():
            if self.measured_on.get(key) != value:
                raise BadInput(
                    f"{what} was measured with {key} {self.measured_on.get(key)!r}, but this "
                    f"run has {value!r}; measure one here with sosp latency-table --device "
                    f"{torch.device(device).type} (a latency holds only where it was measured)"
                )

    def check_network(self, graph: StructureGraph, input_shape: tuple[int, ...]) -> None:
        """Refuse a table of another network or input shape than `graph`'s."""
        hint = "make one for this model with sosp latency-table"
        if list(input_shape) != list(self.input_shape):
            raise BadInput(
                f"the latency table was measured on inputs of shape {tuple(self.input_shape)}, "
                f"not {tuple(input_shape)}; {hint}"
            )
        planned, unmodeled = timed_operations(graph, self.measured_on.get("fold_bn", True))
        missing = sorted((set(planned) | set(unmodeled)) - set(self.nodes) - set(self.unmodeled))
        if missing:
            raise BadInput(
                f"the latency table lacks operation {missing[0]!r} of this model; {hint}"
            )
        here = {n.name: n for n in graph.gm.graph.nodes}
        for name, entry in self.nodes.items():  # measured without exclusions: a superset
            node = here.get(name)
            if node is None:
                raise BadInput(
                    f"the latency table has operation {name!r}, which this model lacks; {hint}"
                )
            mine = (_signature(graph.gm, node), *_channels(graph, node))
            if mine != (entry.op, entry.in_channels, entry.out_channels):
                raise BadInput(
                    f"the latency table's {name!r} is {entry.op} with {entry.in_channels} -> "
                    f"{entry.out_channels} channels; this model's is {mine[0]} with "
                    f"{mine[1]} -> {mine[2]}; {hint}"
                )


class LatencyModel:
    """The predicted ms of `graph`'s network (the table's) as structures are pruned."""

    def __init__(self, table: LatencyTable, graph: StructureGraph, input_shape: tuple[int, ...]):
        table.check_network(graph, input_shape)
        self.table = table
        tensors = {n for n in table.nodes}
        tensors |= {t for e in table.nodes.values() for t in (e.input, e.other) if t}
        self.kept = {t: dense_kept(graph, t) for t in tensors}
        self.readers: dict[str, list[str]] = {t: [] for t in tensors}
        for name, entry in table.nodes.items():
            for t in {name, entry.input, entry.other} - {None}:
                self.readers[t].append(name)
        self.touch, self.alive = _channel_owners(graph, tensors)
        self.ms = {name: self._node_ms(name) for name in table.nodes}
        self.ops = sum(self.ms.values())  # the operations' isolated ms, summed

    @property
    def total(self) -> float:
        """The predicted ms of the network as it is now pruned."""
        return self.table.predicted_ms(self.ops)

    def _node_ms(self, name: str) -> float:
        return self.table.node_ms(name, self.kept.__getitem__)

    def nodes_of(self, structures: Iterable[int]) -> set[str]:
        """The operations whose time the kept counts of these structures' channels set."""
        return {n for s in structures for t, _ in self.touch[s] for n in self.readers[t]}

    def prune(self, structures: Iterable[int], restore: bool = False) -> set[str]:
        """Mark `structures` pruned (or, with `restore`, alive again); returns the operations
        whose time changed."""
        changed = set()
        for s in structures:
            for t, c in self.touch[s]:
                before = self.alive[c]
                self.alive[c] += 1 if restore else -1
                if (before == 0) != (self.alive[c] == 0):  # the channel died or came back
                    self.kept[t] += 1 if restore else -1
                    changed.update(self.readers[t])
        for name in changed:
            new = self._node_ms(name)
            self.ops += new - self.ms[name]
            self.ms[name] = new
        return changed

    def saved_ms(self, structures: Sequence[int]) -> float:
        """Predicted ms that pruning `structures` as well would save (nothing kept pruned)."""
        return self.total - self.table.predicted_ms(self.ops_of(structures))

    def ops_of(self, structures: Iterable[int]) -> float:
        """The operations' summed isolated ms with `structures` pruned as well (the model is
        left as it was)."""
        structures, before = list(structures), self.ops
        self.prune(structures)
        out = self.ops
        self.prune(structures, restore=True)
        self.ops = before  # no rounding drift
        return out

    def group_ms(self, pruned: Iterable[int]) -> dict[str, float]:
        """{group: its operations' isolated ms summed, without group factors} with `pruned`
        pruned as well (the model is left as it was)."""
        pruned, before = list(pruned), self.ops
        self.prune(pruned)
        out: dict[str, float] = {}
        for name, entry in self.table.nodes.items():
            factor = self.table.group_factors.get(entry.group, 1.0)
            out[entry.group] = out.get(entry.group, 0.0) + self.ms[name] / factor
        self.prune(pruned, restore=True)
        self.ops = before
        return out

    def predict(self, pruned: Iterable[int]) -> float:
        """Predicted ms with `pruned` pruned as well (the model is left as it was)."""
        return self.table.predicted_ms(self.ops_of(pruned))


def _channel_owners(
    graph: StructureGraph, tensors: set[str]
) -> tuple[list[list[tuple[str, int]]], list[int]]:
    """(per structure, the (tensor, channel id) pairs it writes; per channel id, how many
    structures writing it are alive). A channel with a writer no structure owns (an excluded
    or unprunable layer, the input) never goes and gets no id; a follower (a gate's channel)
    counts as its leaders."""
    owner = {w: s for s, members in enumerate(graph.members) for w in members}

    def owners(w: int) -> set[int] | None:
        if w in graph.followers:
            found = [owners(v) for v in graph.followers[w]]
            return None if any(o is None for o in found) else set().union(*found)
        return {owner[w]} if w in owner else None

    touch: list[list[tuple[str, int]]] = [[] for _ in graph.members]
    alive: list[int] = []
    for t in sorted(tensors):
        for writers in graph.sources[t]:
            found = [owners(w) for w in writers]
            if not found or any(o is None for o in found):
                continue
            structures = set().union(*found)
            for s in structures:
                touch[s].append((t, len(alive)))
            alive.append(len(structures))
    return touch, alive


def dense_kept(graph: StructureGraph, tensor: str) -> int:
    """Channels of `tensor` with a writer (a zero-padding shortcut's padded channels have none:
    surgery drops them), with nothing pruned."""
    return sum(1 for writers in graph.sources[tensor] if writers)


# -- measuring ---------------------------------------------------------------------------------


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    layout: str = "nchw",
    batch: int = 64,
    step: int = 8,
    fold_bn: bool = True,
    repeats: int = 15,
    warmup: int = 3,
    progress: Callable[[Iterator], Iterator] = iter,
) -> LatencyTable:
    """The latency table of `model` (unchanged) on inputs [batch, *input_shape] on `device`.
    `progress` wraps the iteration over the operations' grids (e.g. a tqdm)."""
    if step < 1 or batch < 1 or repeats < 1:
        raise BadInput("step, batch and repeats must each be at least 1")
    on = latency.measured_on(device, precision, layout, batch, fold_bn)
    model = model.to(device)
    graph = analyze(model, input_shape)
    planned, unmodeled = timed_operations(graph, fold_bn)
    nodes = {name: p.node for name, p in planned.items()}
    grids: dict[str, _Planned] = {}
    for p in planned.values():
        grids.setdefault(p.node.op, p)
    dtype = next(model.parameters()).dtype
    forward = latency.deployed(copy.deepcopy(model), device, precision, layout, fold_bn)
    x = latency.sample_input((batch, *input_shape), device, layout, dtype)
    whole = lambda: forward(x)  # noqa: E731
    ops, drift = {}, {}  # drift: the dense network's ms in each grid's rounds
    for sig, p in progress(list(grids.items())):
        calls = _Calls(graph, batch, device, precision, layout)
        try:
            timed = [(g, {pt: calls.of(g, pt) for pt in g.unique}) for g in _grids(p, step)]
        except Exception as e:  # an operation its rule cannot rebuild at fewer channels
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}"
            for name, entry in list(nodes.items()):
                if entry.op == sig:
                    unmodeled[name] = reason
                    del nodes[name]
            continue
        flat = [call for _, by_point in timed for call in by_point.values()]
        *ms, dense_here = latency.interleaved_calls_ms([*flat, whole], device, repeats, warmup)
        found = iter(ms)
        for g, by_point in timed:
            at = {pt: next(found) for pt in by_point}
            ops[g.key], drift[g.key] = g.table(at), dense_here
    if not drift:  # no operation varies
        drift = {"": latency.interleaved_calls_ms([whole], device, repeats, warmup)[0]}
    dense = statistics.median(drift.values())  # the typical speed
    for key, op in ops.items():  # as if all measured at one speed
        op.ms = [[t * dense / drift[key] for t in row] for row in op.ms]
    table = LatencyTable(on, list(input_shape), step, dense, ops, nodes, unmodeled=unmodeled)
    table.ops_dense_ms = table.ops_ms(lambda name: dense_kept(graph, name))
    if nodes:
        calibrate(table, model, input_shape, repeats, warmup)
    return table


CALIBRATION = (0.75, 0.5, 0.25, 0.125)  # kept fractions of the uniformly pruned networks


def calibrate(
    table: LatencyTable, model: nn.Module, input_shape: tuple[int, ...], repeats: int, warmup: int
) -> None:
    """Fit `table.group_factors` and `table.offset_ms` to whole networks (module docstring),
    pruned under stream coupling so that streams shrink, each timed in turn with the dense
    one; `table.calibration` records each network's predicted and measured fraction."""
    on, device = table.measured_on, next(model.parameters()).device
    graph = analyze(model, input_shape, coupling="stream")
    predictor = LatencyModel(table, graph, input_shape)
    deploy = lambda m: latency.deployed(  # noqa: E731
        copy.deepcopy(m), device, on["precision"], on["layout"], on["fold_bn"]
    )
    dtype = next(model.parameters()).dtype
    x = latency.sample_input((on["batch"], *input_shape), device, on["layout"], dtype)
    layer_group = {  # each layer's structures by the activation size they write
        name: _group(next(n for n in graph.gm.graph.nodes if n.name == graph.layers[name].node))
        for name in graph.layer_structures()
    }
    shares = predictor.group_ms([])
    fitted = sorted(g for g, ms in shares.items() if ms >= 0.05 * sum(shares.values()))
    networks = [("all", f) for f in CALIBRATION] + [(g, f) for g in fitted for f in (0.5, 0.25)]
    rows, points = [(shares, 1.0)], []
    for group, fraction in networks:
        pruned = [
            s
            for name, idx in graph.layer_structures().items()
            if group == "all" or layer_group[name] == group
            for s in idx[max(1, round(fraction * len(idx))) :]
        ]
        forwards = {"dense": deploy(model), "pruned": deploy(build_pruned(graph, pruned))}
        ms = latency.interleaved_ms(forwards, x, device, repeats, warmup)
        rows.append((predictor.group_ms(pruned), ms["pruned"] / ms["dense"]))
        points.append({"narrowed": group, "kept_fraction": fraction, "row": len(rows) - 1})
    table.group_factors, table.offset_ms = _fitted_factors(rows, fitted, table.dense_ms)
    table.ops_dense_ms = LatencyModel(table, graph, input_shape).ops
    for point, (group_ms, measured) in zip(points, rows[1:], strict=True):
        del point["row"]
        ops = sum(table.group_factors.get(g, 1.0) * ms for g, ms in group_ms.items())
        point["predicted_fraction"] = table.predicted_ms(ops) / table.dense_ms
        point["measured_fraction"] = measured
    table.calibration = points


def _fitted_factors(
    rows: list[tuple[dict[str, float], float]], fitted: list[str], dense_ms: float
) -> tuple[dict[str, float], float]:
    """({group: a_g}, c) of least squares over the networks `rows` (each: its operations'
    isolated ms per group, its measured fraction of the dense time): fraction * dense_ms =
    c + sum_g a_g S_g + the groups not fitted (factor 1); each a_g kept within [0.1, 10]."""
    a = torch.tensor(
        [[1.0] + [group_ms.get(g, 0.0) for g in fitted] for group_ms, _ in rows],
        dtype=torch.float64,
    )
    b = torch.tensor(
        [
            measured * dense_ms - sum(ms for g, ms in group_ms.items() if g not in fitted)
            for group_ms, measured in rows
        ],
        dtype=torch.float64,
    )
    solution = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.flatten().tolist()
    factors = {g: min(max(f, 0.1), 10.0) for g, f in zip(fitted, solution[1:], strict=True)}
    return factors, solution[0]


@dataclass
class _Planned:
    """An operation `measure` times: its entry, fx node, and which channel counts vary."""

    node: NodeEntry
    fx_node: fx.Node
    two_d: bool
    in_varies: bool
    out_varies: bool


def timed_operations(
    graph: StructureGraph, fold_bn: bool
) -> tuple[dict[str, _Planned], dict[str, str]]:
    """({node: what `measure` times of it}, {node: why it cannot be timed}): every operation
    on channel tensors whose input or output channels pruning can change, but BatchNorms that
    folding removes."""
    varies = _varying_tensors(graph)
    planned, unmodeled = {}, {}
    for node in graph.gm.graph.nodes:
        sig = _signature(graph.gm, node)
        if sig is None or (fold_bn and _folded(graph.gm, node)):
            continue  # not an operation on channels, or none once BatchNorm is folded
        cin, cout = _channels(graph, node)
        operands = _sum_operands(node)
        if operands is not None:  # both operands' kept channels count (`LatencyTable.sum_ms`)
            first, second = (a.name if varies.get(a.name, False) else None for a in operands)
            if first or second:
                entry = NodeEntry(sig, first, cin, cout, _group(node), second, sum=True)
                planned[node.name] = _Planned(entry, node, False, True, True)
            continue
        inp = _first_tensor_arg(node)
        in_varies = inp is not None and varies.get(inp.name, False)
        out_varies = varies.get(node.name, False)
        if not (in_varies or out_varies):
            continue  # no pruning changes it: a fixed part of dense_ms
        two_d = _is_writer(graph.gm, node)
        if not two_d and not in_varies:
            unmodeled[node.name] = "its output channels vary but its input channels do not"
            continue
        entry = NodeEntry(sig, inp.name if in_varies else None, cin, cout, _group(node))
        planned[node.name] = _Planned(entry, node, two_d, in_varies, out_varies)
    return planned, unmodeled


def _sum_operands(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """The two operands of a residual sum of two tensors of its shape, else None."""
    if node.op not in ("call_function", "call_method") or not isinstance(op_rule(node), AddRule):
        return None
    operands = node.args[:2]
    shape = _shape(node)
    if len(operands) == 2 and all(isinstance(a, fx.Node) and _shape(a) == shape for a in operands):
        return operands
    return None


def _group(node: fx.Node) -> str:
    """The activation size of `node`'s output: "HxW", or "vector" without spatial dims."""
    size = _shape(node)[2:]
    return "x".join(map(str, size)) if size else "vector"


def grid(n: int, step: int) -> list[int]:
    """1, the multiples of `step` below n, and n; `step` coarsened to ceil(n / (MAX_POINTS - 2))
    where finer would give more than MAX_POINTS points."""
    step = max(step, math.ceil(n / (MAX_POINTS - 2)))
    return sorted({1, n, *range(step, n, step)})


def _varying_tensors(graph: StructureGraph) -> dict[str, bool]:
    """Tensor node -> whether pruning can remove one of its channels: a channel whose writers
    all lie in prunable layers (the classifier's outputs and the input's channels cannot go)."""
    prunable = [_prunable_writer(graph, w) for w in range(graph.num_writers)]
    return {
        name: type(src) is list and any(ws and all(prunable[w] for w in ws) for ws in src)
        for name, src in graph.sources.items()
    }


def _prunable_writer(graph: StructureGraph, w: int) -> bool:
    """Whether writer channel `w` can go: its layer is prunable (a follower, e.g. a gate's
    channel: while all it follows can go)."""
    if w in graph.followers:
        return all(_prunable_writer(graph, v) for v in graph.followers[w])
    try:
        return graph.layers[graph.writer_channel(w)[0]].prunable
    except KeyError:  # an input channel
        return False


def _first_tensor_arg(node: fx.Node) -> fx.Node | None:
    return next((a for a in node.args if isinstance(a, fx.Node) and _shape(a)), None)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _channels(graph: StructureGraph, node: fx.Node) -> tuple[int, int]:
    """(dense channels of its first tensor input, dense channels of its output)."""
    inp = _first_tensor_arg(node)
    cout = _shape(node)[1]
    return (_shape(inp)[1] if inp is not None else cout), cout


def _folded(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A BatchNorm that `exporting.folded_batchnorm` folds: right after a conv it alone reads."""
    if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
        return False
    (x,) = node.args[:1]
    return (
        isinstance(x, fx.Node)
        and x.op == "call_module"
        and isinstance(gm.get_submodule(x.target), nn.Conv2d)
        and len(x.users) == 1
    )


def _is_writer(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A conv (not grouped) or linear module: input and output channels vary apart."""
    if node.op != "call_module":
        return False
    m = gm.get_submodule(node.target)
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)


def _signature(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """What its time depends on (module or function, its arguments, the input shapes); None
    for a node that is not an operation on channel tensors [B, C, ...]."""
    shape = _shape(node)
    if node.op not in ("call_module", "call_function", "call_method") or not shape:
        return None
    if len(shape) < 2:
        return None
    if node.op == "call_module":
        what = repr(gm.get_submodule(node.target)).replace("\n", " ")
    else:
        what = getattr(node.target, "__name__", str(node.target))
    args = [
        f"tensor{list(_shape(a) or ())}" if isinstance(a, fx.Node) else repr(a) for a in node.args
    ]
    kwargs = [f"{k}={v!r}" for k, v in node.kwargs.items()]
    return f"{what}({', '.join(args + kwargs)}) -> {list(shape)}"


@dataclass
class _Grid:
    """One grid `measure` times: its key in `LatencyTable.ops`, its inputs (and outputs: None
    for one column, the output following the input), and `timed(kept_in, kept_out)`, the
    point whose time stands for a grid point (a sum's operand keeps at most its output)."""

    key: str
    inputs: list[int]
    outputs: list[int] | None
    kind: str  # what `_Calls.of` builds: "op", "index_add", "scatter"
    node: fx.Node
    timed: Callable[[int, int], tuple[int, int]] = lambda i, o: (i, o)

    @property
    def points(self) -> list[tuple[int, int]]:
        return [(i, o) for i in self.inputs for o in (self.outputs or [i])]

    @property
    def unique(self) -> list[tuple[int, int]]:
        return list(dict.fromkeys(self.timed(*pt) for pt in self.points))

    def table(self, ms: dict[tuple[int, int], float]) -> OpTable:
        """The OpTable of the times `ms` at the timed points."""
        rows = [[ms[self.timed(i, o)] for o in (self.outputs or [i])] for i in self.inputs]
        return OpTable(self.inputs, self.outputs, rows)


def _grids(p: _Planned, step: int) -> list[_Grid]:
    """What `measure` times of one operation: a grid over its kept (input, output) channels;
    a residual sum three, over the kept channels of an operand and of the sum: both operands
    keeping them all (a plain add), one operand taken into the other (`IndexAdd`), one
    scattered into the sum's channels (`ChannelScatter`)."""
    node, entry = p.fx_node, p.node
    if entry.sum:
        ks = grid(entry.out_channels, step)
        within = lambda k, n: (min(k, n), n)  # noqa: E731
        return [
            _Grid(entry.op, ks, None, "op", node),
            _Grid(entry.op + INDEX_ADD, ks, ks, "index_add", node, within),
            _Grid(entry.op + SCATTER, ks, ks, "scatter", node, within),
        ]
    inputs = grid(entry.in_channels, step) if p.in_varies else [entry.in_channels]
    outputs = None
    if p.two_d:
        outputs = grid(entry.out_channels, step) if p.out_varies else [entry.out_channels]
    return [_Grid(entry.op, inputs, outputs, "op", node)]


class _Calls:
    """Calls without arguments that run one grid point of an operation on random inputs of
    the batch, in the table's precision and layout; inputs of one shape are made once."""

    def __init__(self, graph: StructureGraph, batch: int, device, precision: str, layout: str):
        self.graph, self.batch, self.device = graph, batch, device
        self.precision, self.layout = precision, layout
        # under bf16 autocast every activation after the first conv is bf16
        bf16 = precision == "bf16"
        self.dtype = torch.bfloat16 if bf16 else next(graph.gm.parameters()).dtype
        self.tensors: dict[tuple[tuple[int, ...], int], torch.Tensor] = {}

    def tensor(self, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
        """A random input of `shape`, the same for the same `seed`."""
        if (shape, seed) not in self.tensors:  # made once per shape: memory on a GPU
            self.tensors[shape, seed] = latency.sample_input(
                shape, self.device, self.layout, self.dtype, seed
            )
        return self.tensors[shape, seed]

    def of(self, g: _Grid, point: tuple[int, int]) -> Callable[[], object]:
        kin, kout = point
        if g.kind == "op":
            return self.op(g.node, kin, kout)
        rest = _shape(g.node)[2:]
        x = self.tensor((self.batch, kin, *rest), seed=1)  # not the stream it goes into
        if g.kind == "scatter":
            return self.timed(ChannelScatter(range(kin), kout).to(self.device), x)
        stream = self.tensor((self.batch, kout, *rest))
        # in place, as surgery's `overwrite` sums run in inference mode
        return self.timed(IndexAdd(range(kin), kout, overwrite=True).to(self.device), stream, x)

    def op(self, node: fx.Node, kin: int, kout: int) -> Callable[[], object]:
        """`node`'s operation rebuilt for `kin` input and `kout` output channels."""
        cin = _shape(_first_tensor_arg(node))[1]

        def value(a):
            if not isinstance(a, fx.Node):
                return a
            if _shape(a) is None:
                raise BadInput(f"argument {a.name} is not a tensor")
            shape = [self.batch, *_shape(a)[1:]]
            if shape[1] == cin:
                shape[1] = kin
            return self.tensor(tuple(shape))

        args = [value(a) for a in node.args]
        kwargs = {k: value(v) for k, v in node.kwargs.items()}
        if node.op == "call_module":
            m = self.graph.gm.get_submodule(node.target)
            rule = module_rule(m)
            small = rule.shrink(m, list(range(kout)), list(range(kin))) if rule else None
            fn = (small or m).to(self.device).eval()
            fn = fn.to(memory_format=latency.memory_format(self.layout))
        elif node.op == "call_method":
            fn = lambda x, *a, **k: getattr(x, node.target)(*a, **k)  # noqa: E731
        else:
            fn = node.target
        return self.timed(fn, *args, **kwargs)

    def timed(self, fn: Callable, *args, **kwargs) -> Callable[[], object]:
        def call() -> object:
            with latency.autocast_for(self.device, self.precision):
                return fn(*args, **kwargs)

        return call
