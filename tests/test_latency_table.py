"""Latency tables (`sosp.latency_table`): interpolation on a grid, the grids, the JSON file,
the device and network checks, and what `measure` puts in a table of a tiny CNN."""

import itertools
import json
import random

import pytest
import torch
from torch import nn

from sosp import latency, models
from sosp.errors import BadInput
from sosp.latency_table import (
    CALIBRATION,
    INDEX_ADD,
    MAX_POINTS,
    SCATTER,
    LatencyModel,
    LatencyTable,
    OpTable,
    grid,
)
from sosp.structures import analyze
from sosp.surgery import build_pruned
from tests.latency_nets import CHAIN_SHAPE, ChainNet, brute_kept, dense_kept, quick_table
from tests.tiny_nets import SqueezeExciteNet

SHAPE = (1, 8, 8)  # digits


def resnet20():
    return models.create("resnet20", 10, in_channels=1, image_size=8)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return resnet20()


@pytest.fixture(scope="module")
def table(net):
    """resnet20's table at batch 8, step 4, one round, BatchNorm folded."""
    return quick_table(net, SHAPE, batch=8, step=4)


@pytest.fixture(scope="module")
def unfolded(net):
    return quick_table(net, SHAPE, batch=8, step=4, fold_bn=False)


# -- OpTable.at ----------------------------------------------------------------------------------


def random_grid(rng: random.Random, n: int) -> list[int]:
    return sorted(rng.sample(range(1, 40), n))


def test_at_1d_is_the_grid_value_on_the_grid_linear_between_and_clamped():
    """On a 1-d grid `at` returns the grid's value at a grid point, the straight line between
    the two neighbours in between, and the end values outside (kept out ignored)."""
    rng = random.Random(0)
    for _ in range(50):
        inputs = random_grid(rng, rng.randint(1, 6))
        values = [rng.uniform(0.1, 5) for _ in inputs]
        op = OpTable(inputs, None, [[v] for v in values])
        for k, v in zip(inputs, values, strict=True):
            assert op.at(k, rng.randint(1, 50)) == v
        for (a, va), (b, vb) in itertools.pairwise(zip(inputs, values, strict=True)):
            for k in range(a + 1, b):
                assert op.at(k, 7) == pytest.approx(va + (vb - va) * (k - a) / (b - a), rel=1e-12)
        assert op.at(inputs[0] - 1, 3) == op.at(0, 3) == values[0]
        assert op.at(inputs[-1] + 1, 3) == op.at(1000, 3) == values[-1]


def test_at_2d_is_bilinear():
    """On a 2-d grid `at` returns the grid's value at grid points, reproduces any bilinear
    function a + b i + c o + d i o exactly inside the grid (so it is linear along each axis
    between grid points), and clamps each coordinate to the grid outside."""
    rng = random.Random(1)
    for _ in range(30):
        inputs, outputs = random_grid(rng, rng.randint(1, 5)), random_grid(rng, rng.randint(1, 5))
        ms = [[rng.uniform(0.1, 5) for _ in outputs] for _ in inputs]
        op = OpTable(inputs, outputs, ms)
        for i, ki in enumerate(inputs):
            for j, ko in enumerate(outputs):
                assert op.at(ki, ko) == ms[i][j]
        lo_i, hi_i, lo_o, hi_o = inputs[0], inputs[-1], outputs[0], outputs[-1]
        for ki in (lo_i - 5, 0, hi_i + 3):
            for ko in (lo_o - 2, hi_o + 9):
                ci, co = min(max(ki, lo_i), hi_i), min(max(ko, lo_o), hi_o)
                assert op.at(ki, ko) == pytest.approx(op.at(ci, co), rel=1e-12)
        a, b, c, d = (rng.uniform(-1, 1) for _ in range(4))

        def f(i, o, a=a, b=b, c=c, d=d):
            return a + b * i + c * o + d * i * o

        bilinear = OpTable(inputs, outputs, [[f(i, o) for o in outputs] for i in inputs])
        for ki in range(lo_i, hi_i + 1):
            for ko in range(lo_o, hi_o + 1):
                assert bilinear.at(ki, ko) == pytest.approx(f(ki, ko), rel=1e-9, abs=1e-9)


def test_at_on_a_one_point_axis_is_constant_along_it():
    """A grid of one input count (a conv reading the network's input) is constant in kept in
    and interpolates in kept out."""
    op = OpTable([3], [1, 4, 8], [[1.0, 4.0, 2.0]])
    assert op.at(1, 4) == op.at(3, 4) == op.at(9, 4) == 4.0
    assert op.at(3, 6) == pytest.approx(3.0)


# -- grid ----------------------------------------------------------------------------------------


def test_grid_holds_one_n_and_multiples_of_step_in_at_most_max_points():
    """grid(n, step) is sorted and distinct, starts at 1 and ends at n; every point between
    is a multiple of step (of a coarser step where finer would exceed MAX_POINTS), no gap is
    wider than the coarsened step, there are at most MAX_POINTS points, and where
    (n - 1) // step + 2 points fit, every multiple of step below n is there."""
    for n in range(1, 300):
        for step in (1, 2, 3, 4, 8, 16, 32):
            g = grid(n, step)
            assert g == sorted(set(g)) and g[0] == 1 and g[-1] == n, (n, step, g)
            assert len(g) <= MAX_POINTS, (n, step, g)
            coarse = max(step, -(-n // (MAX_POINTS - 2)))
            assert all(k % coarse == 0 for k in g[1:-1]), (n, step, g)
            assert all(b - a <= coarse for a, b in itertools.pairwise(g)), (n, step, g)
            if n <= (MAX_POINTS - 2) * step:
                assert set(range(step, n, step)) <= set(g), (n, step, g)


# -- files ---------------------------------------------------------------------------------------


def test_save_and_load_give_an_equal_table(table, tmp_path):
    """A table written by `save` loads back equal, field by field (the network description,
    calibration and unmodeled included)."""
    table = LatencyTable(**{**vars(table), "network": {"model": "resnet20", "widths": None}})
    table.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back == table
    assert isinstance(next(iter(back.ops.values())), OpTable)
    assert back.calibration == table.calibration and len(back.calibration) >= len(CALIBRATION)


def broken_files(doc: dict) -> dict[str, str]:
    """Name -> file text of files that are not a complete latency table of this version."""
    no_ops = {k: v for k, v in doc.items() if k != "ops"}
    node = next(iter(doc["nodes"]))
    bad_node = {**doc, "nodes": {**doc["nodes"], node: {"op": doc["nodes"][node]["op"]}}}
    return {
        "truncated": json.dumps(doc)[:200],
        "empty": "",
        "a list": json.dumps([doc]),
        "another format": json.dumps({**doc, "format": doc["format"] + 1}),
        "no format": json.dumps({k: v for k, v in doc.items() if k != "format"}),
        "no ops": json.dumps(no_ops),
        "a node without fields": json.dumps(bad_node),
        "ops not a mapping": json.dumps({**doc, "ops": list(doc["ops"].values())}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated", "empty", "a list", "another format", "no format", "no ops",
        "a node without fields", "ops not a mapping", "missing",
    ],
)  # fmt: skip
def test_a_broken_table_file_is_one_line_naming_the_command(table, tmp_path, case):
    """Loading a file that is not a complete table of this version (cut short, another
    format, a part missing or of the wrong kind, no file at all) raises BadInput: one line
    that names the file and says to make it again with `sosp latency-table`."""
    good = tmp_path / "good.json"
    table.save(good)
    path = tmp_path / "t.json"
    if case != "missing":
        path.write_text(broken_files(json.loads(good.read_text()))[case])
    with pytest.raises(BadInput) as e:
        LatencyTable.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert "sosp latency-table" in message, message


# -- checks --------------------------------------------------------------------------------------


def test_check_device_accepts_here_and_refuses_another_device_or_torch(table):
    """A table measured here passes `check_device`; one whose measured_on names another
    device (or thread count) or another torch version is refused with one line naming the
    key, both values and `sosp latency-table`."""
    table.check_device("cpu")
    for key, other in (("device_name", "Some GPU 9000"), ("torch", "1.0.0")):
        edited = LatencyTable(**{**vars(table), "measured_on": {**table.measured_on, key: other}})
        with pytest.raises(BadInput) as e:
            edited.check_device("cpu")
        message = str(e.value)
        assert "\n" not in message and key in message and other in message
        assert table.measured_on[key] in message and "sosp latency-table" in message


def test_check_network_accepts_its_network_and_refuses_another_or_another_shape(table, net):
    """The table passes `check_network` for its own network under either coupling; it is
    refused for another zoo model (ResNet-32) and for the same model on inputs of another
    shape, with one line saying to make a table for this model."""
    for coupling in ("filter", "stream"):
        table.check_network(analyze(net, SHAPE, coupling=coupling), SHAPE)
    other = models.create("resnet32", 10, in_channels=1, image_size=8)
    with pytest.raises(BadInput, match="sosp latency-table"):
        table.check_network(analyze(other, SHAPE), SHAPE)
    with pytest.raises(BadInput, match=r"shape \(1, 8, 8\), not \(1, 16, 16\)"):
        table.check_network(analyze(resnet20(), (1, 16, 16)), (1, 16, 16))


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda: ChainNet(kernel=1), id="another-kernel-size"),
        pytest.param(lambda: ChainNet(widths=(4, 5, 4, 3, 3)), id="one-conv-more"),
    ],
)
def test_check_network_refuses_a_network_with_the_same_names_and_channels(other):
    """A table of ChainNet (3x3 convolutions, four of them) is refused for a network whose
    operations carry the same node names and channel counts but compute something else: 1x1
    convolutions (other times), or a fifth conv the table has no grid for (its time would
    count as nothing saved whatever is pruned)."""
    chain = ChainNet()
    table = quick_table(chain, CHAIN_SHAPE, step=1)
    model = other()
    with pytest.raises(BadInput, match="sosp latency-table"):
        table.check_network(analyze(model, CHAIN_SHAPE), CHAIN_SHAPE)


# -- measure -------------------------------------------------------------------------------------


def is_operation(node) -> bool:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return node.op in ("call_module", "call_function", "call_method") and shape and len(shape) > 1


def first_tensor(node):
    return next((a for a in node.args if hasattr(a, "meta") and is_tensor(a)), None)


def is_tensor(node) -> bool:
    return hasattr(node.meta.get("tensor_meta"), "shape")


def can_shrink(graph, name: str) -> bool:
    """Whether pruning every structure removes a channel of tensor `name` (brute force)."""
    everything = range(len(graph.structures))
    return len(graph.kept(name, graph.alive_writers(everything))) < len(graph.sources[name])


def folded_bn(graph, node) -> bool:
    """A BatchNorm2d reading a Conv2d that nothing else reads: folded into it on export."""
    if node.op != "call_module":
        return False
    if not isinstance(graph.gm.get_submodule(node.target), nn.BatchNorm2d):
        return False
    conv = node.args[0]
    return (
        conv.op == "call_module"
        and isinstance(graph.gm.get_submodule(conv.target), nn.Conv2d)
        and len(conv.users) == 1
    )


def is_sum(node) -> bool:
    """A sum of two tensors of its own shape (a residual sum)."""
    operands = node.args[:2]
    return (
        getattr(node.target, "__name__", node.target) in ("add", "iadd", "add_")
        and len(operands) == 2
        and all(hasattr(a, "meta") and is_tensor(a) for a in operands)
        and all(a.meta["tensor_meta"].shape == node.meta["tensor_meta"].shape for a in operands)
    )


def check_entries(table, graph, fold_bn: bool) -> None:
    """Every operation whose input or output channels pruning can shrink has a node entry
    (or an `unmodeled` reason), except a folded BatchNorm; no other operation has one. Each
    entry names its first tensor input where that can shrink (a residual sum also its second),
    and the dense channel counts;
    its grid spans grid(channels, step) along every axis that can shrink, else the dense
    count alone, with one column for an operation other than a conv or linear layer."""
    expected = set()
    for node in graph.gm.graph.nodes:
        if not is_operation(node) or (fold_bn and folded_bn(graph, node)):
            continue
        operands = [a for a in node.args if hasattr(a, "meta") and is_tensor(a)]
        if is_sum(node):  # either operand counts
            operands = node.args[:2]
        elif operands:
            operands = operands[:1]
        if any(can_shrink(graph, a.name) for a in operands) or can_shrink(graph, node.name):
            expected.add(node.name)
    assert set(table.nodes) | set(table.unmodeled) == expected
    step = table.step
    for name, entry in table.nodes.items():
        node = next(n for n in graph.gm.graph.nodes if n.name == name)
        inp = first_tensor(node)
        in_shrinks = inp is not None and can_shrink(graph, inp.name)
        assert entry.input == (inp.name if in_shrinks else None), name
        cin = inp.meta["tensor_meta"].shape[1] if inp is not None else None
        cout = node.meta["tensor_meta"].shape[1]
        assert (entry.in_channels, entry.out_channels) == (cin or cout, cout), name
        op = table.ops[entry.op]
        assert entry.sum == is_sum(node), name
        if entry.sum:  # a plain add over k, and IndexAdd and ChannelScatter over (k, n)
            second = node.args[1]
            assert entry.other == (second.name if can_shrink(graph, second.name) else None)
            ks = grid(cout, step)
            assert (op.inputs, op.outputs, len(op.ms)) == (ks, None, len(ks)), name
            for suffix in (INDEX_ADD, SCATTER):
                g = table.ops[entry.op + suffix]
                assert g.inputs == g.outputs == ks, name
                assert [len(row) for row in g.ms] == [len(ks)] * len(ks), name
                assert all(t > 0 for row in g.ms for t in row), name
            continue
        assert op.inputs == (grid(cin, step) if in_shrinks else [cin or cout]), name
        module = graph.gm.get_submodule(node.target) if node.op == "call_module" else None
        writer = isinstance(module, nn.Linear) or (
            isinstance(module, nn.Conv2d) and module.groups == 1
        )
        if writer:
            shrinks = can_shrink(graph, name)
            assert op.outputs == (grid(cout, step) if shrinks else [cout]), name
        else:
            assert op.outputs is None, name
        assert [len(row) for row in op.ms] == [len(op.outputs or [0])] * len(op.inputs), name
        assert all(t > 0 for row in op.ms for t in row), name


def test_measure_resnet20_has_an_entry_per_operation_that_pruning_changes(table, net):
    """resnet20 (digits) at batch 8, step 4, one round: every conv, ReLU, residual sum,
    shortcut, pooling and the classifier has its entry and a grid of the right shape (see
    `check_entries`); the folded BatchNorms have none; nothing is unmodeled; what it was
    measured on is recorded."""
    graph = analyze(net, SHAPE)
    check_entries(table, graph, fold_bn=True)
    assert table.unmodeled == {}
    nodes = {n.name: n for n in graph.gm.graph.nodes}

    def kind(name):
        n = nodes[name]
        if n.op == "call_module":
            return type(graph.gm.get_submodule(n.target)).__name__
        return getattr(n.target, "__name__", str(n.target))

    kinds = [kind(n) for n in table.nodes]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {
        "Conv2d": 21,  # 19 3x3 convs and two 1x1 downsampling shortcuts
        "relu": 19,
        "add": 9,
        "Identity": 7,  # the shortcuts without downsampling
        "AdaptiveAvgPool2d": 1,
        "flatten": 1,
        "Linear": 1,
    }
    assert table.measured_on == {
        "device": "cpu",
        "device_name": latency.device_name("cpu"),
        "torch": torch.__version__,
        "precision": "fp32",
        "layout": "nchw",
        "batch": 8,
        "fold_bn": True,
    }
    assert table.input_shape == list(SHAPE) and table.step == 4 and table.dense_ms > 0


def test_measure_predicts_the_dense_latency_at_full_width(table, net):
    """With every channel kept the table predicts exactly its measured dense latency, summed
    over its operations and through `LatencyModel` under either coupling."""
    graph = analyze(net, SHAPE)
    assert table.ops_ms(dense_kept(graph)) == pytest.approx(table.ops_dense_ms, rel=1e-12)
    assert table.predicted_ms(table.ops_dense_ms) == pytest.approx(table.dense_ms, rel=1e-12)
    for coupling in ("filter", "stream"):
        model = LatencyModel(table, analyze(net, SHAPE, coupling=coupling), SHAPE)
        assert model.total == pytest.approx(table.dense_ms, rel=1e-12)


def test_measure_without_folding_times_the_batchnorms_too(table, unfolded, net):
    """With fold_bn=False every BatchNorm has an entry as well (all of resnet20's follow a
    conv), and the other entries are those of the folded table; fold_bn is recorded."""
    graph = analyze(net, SHAPE)
    check_entries(unfolded, graph, fold_bn=False)
    bns = {n.name for n in graph.gm.graph.nodes if folded_bn(graph, n)}
    assert len(bns) == 21
    assert set(unfolded.nodes) == set(table.nodes) | bns and not bns & set(table.nodes)
    assert unfolded.measured_on["fold_bn"] is False


def test_measure_models_a_squeeze_excite_gate():
    """On a network with a squeeze-and-excitation gate, the gate's expand conv and sigmoid
    shrink with the channels they gate (followers): they have entries whose grids span
    those channels, like every other operation pruning changes."""
    torch.manual_seed(0)
    net = SqueezeExciteNet()
    table = quick_table(net, (2, 4, 4), step=1)
    check_entries(table, analyze(net, (2, 4, 4)), fold_bn=True)


def test_measure_refuses_bad_settings():
    """An unknown precision or layout, and a step, batch or repeats below 1, are BadInput."""
    net = ChainNet()
    for kw in ({"precision": "fp16"}, {"layout": "nhcw"}, {"step": 0}, {"batch": 0}):
        with pytest.raises(BadInput):
            quick_table(net, CHAIN_SHAPE, **kw)


class Recorder:
    """Stands for a table's grids: records (grid key, kept operand, kept out) of each lookup."""

    def __init__(self):
        self.seen = []

    def __getitem__(self, key):
        return self.Grid(self, key)

    class Grid:
        def __init__(self, recorder, key):
            self.recorder, self.key = recorder, key

        def at(self, k, n):
            self.recorder.seen.append((self.key, k, n))
            return 0.0


def test_sum_ms_prices_the_modules_surgery_builds(table, net):
    """For no mask and random per-filter masks of resnet20, each residual sum's price looks
    up exactly the modules surgery builds for it: the plain add at the full count where it
    added none, IndexAdd at (the channels it adds, the sum's channels), and ChannelScatter at
    (the first operand's kept channels, the sum's) where it scattered the first operand; all
    three kinds occur."""
    graph = analyze(net, SHAPE)
    layers = list(graph.layer_structures().values())
    masks = [[]]
    for seed in range(6):
        rng = random.Random(seed)
        masks.append([s for idx in layers for s in rng.sample(idx, rng.randint(0, len(idx) - 1))])
    kinds = set()
    for pruned in masks:
        modules = dict(build_pruned(graph, pruned).named_modules())
        kept = brute_kept(graph, pruned)
        for name, entry in table.nodes.items():
            if not entry.sum:
                continue
            recorder = Recorder()
            LatencyTable.sum_ms(
                type("Grids", (), {"ops": recorder})(),
                entry.op,
                kept(entry.input) if entry.input else entry.in_channels,
                kept(entry.other) if entry.other else entry.in_channels,
                kept(name),
            )
            built = []
            for suffix in (SCATTER, INDEX_ADD):
                m = modules.get(f"{name}_{'scatter' if suffix == SCATTER else 'index_add'}")
                if m is not None:
                    built.append((entry.op + suffix, len(m.positions), m.size))
            expected = built or [(entry.op, kept(name), kept(name))]
            assert sorted(recorder.seen) == sorted(expected), name
            kinds.add(tuple(key.removeprefix(entry.op) for key, _, _ in expected))
    assert kinds == {("",), (INDEX_ADD,), (SCATTER, INDEX_ADD)}
