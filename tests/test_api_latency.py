"""`sosp.prune(..., budget="latency", latency_table=PATH)` end to end on the digits ResNet-20:
every method meets the predicted budget and builds the network its mask soft-masks, and a
missing, foreign or out-of-place table is one BadInput line."""

import itertools
import json

import pytest
import torch

import sosp
from sosp import counting, methods, models
from sosp.errors import BadInput
from sosp.latency_table import LatencyTable
from sosp.structures import analyze
from sosp.surgery import indices_from_mask, soft_masked
from tests.latency_nets import brute_ms, mac_like, quick_table, with_grids
from tests.test_api import batches
from tests.tiny_nets import randomized

SHAPE = (1, 8, 8)


def resnet20(dtype=torch.float32):
    return randomized(models.create("resnet20", 10, in_channels=1, image_size=8), dtype=dtype)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """resnet20's table measured here in one round at batch 2, its grids then overwritten
    with deterministic MAC-like times (`mac_like`), so that no budget depends on the load of
    the machine: the path of its JSON file."""
    torch.manual_seed(0)
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    graph = analyze(model, SHAPE)
    table = with_grids(quick_table(model, SHAPE, batch=2, step=4), graph, mac_like, offset=0.01)
    path = tmp_path_factory.mktemp("latency") / "resnet20.json"
    table.save(path)
    return path


def check_result(r, model, table_path, ratio, coupling, scope="global"):
    """The report's latency is the table's prediction for the mask (brute force), removes at
    least `ratio` of the dense prediction, holds a measurement; the pruned network computes
    what the soft-masked dense one does (eval mode, 1e-5)."""
    table = LatencyTable.load(table_path)
    graph = analyze(model, SHAPE, coupling=coupling)
    lat = r.report["latency"]
    assert r.report["budget"] == "latency" and r.report["scope"] == scope
    assert lat["requested_removed"] == ratio and lat["dense_table_ms"] == table.dense_ms
    predicted = brute_ms(table, graph, indices_from_mask(graph, r.mask))
    assert lat["predicted_ms"] == pytest.approx(predicted, rel=1e-9)
    assert lat["predicted_removed"] == pytest.approx(1 - predicted / table.dense_ms, rel=1e-9)
    assert lat["predicted_removed"] >= ratio - 1e-12
    assert lat["speedup_predicted"] == pytest.approx(table.dense_ms / predicted, rel=1e-9)
    assert lat["measured_ms"] > 0 and lat["dense_ms"] > 0
    assert lat["measured_on"] == table.measured_on
    plain = analyze(model, SHAPE)
    soft = soft_masked(model, plain, indices_from_mask(plain, r.mask))
    x = torch.randn(4, *SHAPE, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        torch.testing.assert_close(r.model.eval()(x), soft.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coupling", ["filter", "stream"])
@pytest.mark.parametrize("method", methods.names())
def test_every_method_meets_a_latency_budget(table_path, method, coupling):
    """Every registered method prunes the digits ResNet-20 (N' = 16) to a 30% latency budget
    under either coupling: the knapsack's mask removes at least 30% of the table's dense
    latency as the table predicts it (see `check_result`)."""
    model = resnet20()
    r = sosp.prune(
        model,
        method,
        0.3,
        batches(),
        n_samples=16,
        budget="latency",
        latency_corrections=0,
        latency_table=str(table_path),
        coupling=coupling,
    )
    check_result(r, model, table_path, 0.3, coupling)


@pytest.mark.parametrize("coupling", ["filter", "stream"])
@pytest.mark.parametrize("scope, round_to", [("global", 4), ("local", None), ("local", 4)])
def test_round_to_and_local_scope_meet_a_latency_budget(table_path, scope, round_to, coupling):
    """With round_to=4 every pruned conv keeps a multiple of 4 channels (or all); with local
    scope the shortest prefix of the interleaved per-layer orders is taken (without
    round_to, the prefix one structure shorter is predicted to remove less than 40%); either
    way the predicted budget of 40% is met and the network is the soft-masked one."""
    model = resnet20()
    r = sosp.prune(
        model,
        "sosp_h",
        0.4,
        batches(),
        n_samples=16,
        budget="latency",
        latency_corrections=0,
        latency_table=str(table_path),
        coupling=coupling,
        scope=scope,
        round_to=round_to,
    )
    check_result(r, model, table_path, 0.4, coupling, scope)
    if scope == "local" and round_to is None:  # the shortest prefix: one structure less falls short
        table = LatencyTable.load(table_path)
        graph = analyze(model, SHAPE, coupling=coupling)
        index = graph.structure_index()
        shorter = [index[s] for s in r.order[:-1]]
        assert 1 - brute_ms(table, graph, shorter) / table.dense_ms < 0.4
    for name, (kept, total) in r.report["channels"].items():
        assert r.model.get_submodule(name).out_channels == kept
        if round_to:
            assert kept == total or kept % round_to == 0, (name, kept, total)
    assert any(kept < total for kept, total in r.report["channels"].values())


def test_another_budget_with_a_table_reports_the_latency(table_path):
    """With a MAC budget and a table, the report holds the mask's predicted and measured
    latency, and no requested latency."""
    model = resnet20()
    r = sosp.prune(
        model, "magnitude", 0.3, batches(), n_samples=16, budget="macs",
        latency_table=str(table_path),
    )  # fmt: skip
    lat = r.report["latency"]
    assert r.report["macs_removed"] >= 0.3 and lat["requested_removed"] is None
    assert 0 < lat["predicted_removed"] < 1 and lat["measured_ms"] > 0


def test_latency_budget_without_a_table_is_bad_input():
    """budget="latency" without latency_table is one BadInput line naming latency_table and
    `sosp latency-table`."""
    with pytest.raises(BadInput) as e:
        sosp.prune(resnet20(), "sosp_h", 0.3, batches(), n_samples=16, budget="latency")
    assert "latency_table" in str(e.value) and "sosp latency-table" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_table_of_another_network_shape_or_machine_is_bad_input(table_path, tmp_path):
    """resnet20's table is refused for ResNet-32, for ResNet-20 on 16x16 inputs, and where
    its measured_on names another torch version or device: one BadInput line each, saying
    to make a table with `sosp latency-table`."""
    kw = {"n_samples": 16, "budget": "latency", "latency_table": str(table_path)}
    cases = [
        (models.create("resnet32", 10, in_channels=1, image_size=8), batches()),
        (models.create("resnet20", 10, in_channels=1, image_size=16), batches(shape=(1, 16, 16))),
    ]
    for key, value in (("torch", "1.0.0"), ("device_name", "Some GPU 9000")):
        doc = json.loads(table_path.read_text())
        doc["measured_on"][key] = value
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps(doc))
        cases.append((resnet20(), batches(), {**kw, "latency_table": str(path)}))
    for model, data, *other in cases:
        with pytest.raises(BadInput) as e:
            sosp.prune(model, "magnitude", 0.3, data, **(other[0] if other else kw))
        assert "sosp latency-table" in str(e.value) and "\n" not in str(e.value)


def test_a_float64_model_prunes_to_a_latency_budget(table_path):
    """A float64 network (as the exactness tests of sosp prune them) prunes to a latency
    budget like a float32 one: the latency report times it on inputs of its own dtype."""
    model = resnet20(torch.float64)
    data = [(x.double(), y) for x, y in batches()]
    r = sosp.prune(
        model, "sosp_h", 0.3, data, n_samples=16, budget="latency", latency_corrections=0,
        latency_table=str(table_path),
    )  # fmt: skip
    check_result(r, model, table_path, 0.3, "filter")


def test_a_table_measured_without_exclusions_serves_a_prune_with_them(table_path):
    """A table is measured over every layer; a prune that excludes some (the paper's
    resnet_downsample) times fewer operations but is served by the same table, and the
    excluded layers keep every channel."""
    model = resnet20()
    r = sosp.prune(
        model, "sosp_h", 0.2, batches(), n_samples=16, exclude="resnet_downsample",
        budget="latency", latency_corrections=0, latency_table=str(table_path),
    )  # fmt: skip
    assert r.report["latency"]["predicted_removed"] >= 0.2
    assert not any("shortcut" in name for name in r.mask)


EXPONENT = 0.6  # of the stand-in device: narrow networks slower than their MACs say


def macs_device(monkeypatch):
    """A stand-in device, deterministic, on which a network pruned to a fraction f of the
    dense MACs takes f**EXPONENT of the dense time (the table's MAC-like grids predict about
    f): `sosp.api._measured_ms` replaced. Returns the lists of networks it timed together."""
    calls = []

    def measured(ranking, networks):
        calls.append(networks)
        fractions = [counting.count(n, SHAPE).macs / ranking.dense.macs for n in networks]
        return [{"dense": 1.0, "pruned": f**EXPONENT} for f in fractions]

    monkeypatch.setattr(sosp.api, "_measured_ms", measured)
    return calls


def next_target(rounds: list[dict], asked: float) -> float:
    """The secant through the last two (target, measured fraction) pairs at `asked` where the
    measurement rose with the target, moving at most twice as far as the last target scaled
    by asked/measured would; else that scaled target."""
    t1, m1 = rounds[-1]["target"], rounds[-1]["measured_fraction"]
    scaled = t1 * asked / m1
    if len(rounds) == 1:
        return scaled
    t0, m0 = rounds[-2]["target"], rounds[-2]["measured_fraction"]
    slope = (m1 - m0) / (t1 - t0) if t1 != t0 else 0.0
    if slope <= 0:
        return scaled
    step = (asked - m1) / slope
    bound = 2 * abs(scaled - t1)
    return t1 + max(-bound, min(bound, step))


@pytest.mark.parametrize("coupling", ["filter", "stream"])
def test_corrections_bring_the_measured_latency_to_the_one_asked_for(
    table_path, monkeypatch, coupling
):
    """On a device the table mispredicts, each correction asks the table for its last target
    times asked/measured; the network chosen is the one measured closest to the fraction
    asked for, at most `latency_corrections` + 1 networks are timed, the report's measurement
    is the chosen one's, and it is closer than the table alone (round 0), within 10%; the
    networks timed are timed again together at the end."""
    calls = macs_device(monkeypatch)
    ratio, asked = 0.5, 0.5
    kw = dict(n_samples=16, budget="latency", latency_table=str(table_path), coupling=coupling)
    r = sosp.prune(resnet20(), "sosp_h", ratio, batches(), latency_corrections=3, **kw)
    rounds = r.report["latency"]["corrections"]
    assert 2 <= len(rounds) == len(calls) - 1 <= 4
    assert [len(c) for c in calls] == [1] * len(rounds) + [len(rounds)]
    assert [c["final_fraction"] for c in rounds] == [c["measured_fraction"] for c in rounds]
    assert rounds[0]["target"] == asked
    for i in range(1, len(rounds)):
        assert rounds[i]["target"] == pytest.approx(next_target(rounds[:i], asked), rel=1e-12)
    off = [abs(c["measured_fraction"] / asked - 1) for c in rounds]
    chosen = [i for i, c in enumerate(rounds) if c["chosen"]]
    assert chosen == [off.index(min(off))]
    lat = r.report["latency"]
    assert lat["measured_ms"] / lat["dense_ms"] == rounds[chosen[0]]["measured_fraction"]
    assert off[chosen[0]] < off[0] and off[chosen[0]] <= 0.1
    kept_macs = rounds[chosen[0]]["measured_fraction"] ** (1 / EXPONENT)
    assert r.report["macs_removed"] == pytest.approx(1 - kept_macs)


def test_no_corrections_where_the_first_network_measures_as_asked(table_path, monkeypatch):
    """Where the table's own selection measures within 3% of the latency asked for, it is
    timed once and kept: the mask equals the one of latency_corrections=0, which times
    nothing before the report and records no rounds."""
    calls = []

    def as_asked(ranking, networks):
        calls.append(networks)
        return [{"dense": 1.0, "pruned": 0.6} for _ in networks]

    monkeypatch.setattr(sosp.api, "_measured_ms", as_asked)
    kw = dict(n_samples=16, budget="latency", latency_table=str(table_path))
    model = resnet20()
    r = sosp.prune(model, "sosp_h", 0.4, batches(), **kw)
    assert len(calls) == 1 and [c["chosen"] for c in r.report["latency"]["corrections"]] == [True]
    alone = sosp.prune(model, "sosp_h", 0.4, batches(), latency_corrections=0, **kw)
    assert len(calls) == 2  # the report's measurement
    assert alone.report["latency"]["corrections"] == []
    assert alone.mask == r.mask


def test_corrections_stop_at_the_fastest_network_the_table_knows(table_path, monkeypatch):
    """On a device where no pruning saves time (every network measures 0.95 of the dense), the
    corrections ask the table for ever faster networks, then for the fastest it knows where
    they pass it, and stop without an error: the table's own selection (the first, measured
    no worse) is kept, and each network timed is predicted faster than the one before."""

    def never_faster(ranking, networks):
        return [{"dense": 1.0, "pruned": 0.95} for _ in networks]

    monkeypatch.setattr(sosp.api, "_measured_ms", never_faster)
    kw = dict(n_samples=16, budget="latency", latency_table=str(table_path))
    model = resnet20()
    r = sosp.prune(model, "sosp_h", 0.3, batches(), latency_corrections=40, **kw)
    rounds = r.report["latency"]["corrections"]
    assert 3 <= len(rounds) < 41 and rounds[0]["chosen"]  # stopped at the fastest
    predicted = [c["predicted_fraction"] for c in rounds]
    assert all(a > b for a, b in itertools.pairwise(predicted))
    alone = sosp.prune(model, "sosp_h", 0.3, batches(), latency_corrections=0, **kw)
    assert r.mask == alone.mask


def test_next_target_scales_then_follows_the_secant_within_twice_the_scaled_step():
    """After one round the target is scaled by asked/measured; after two, the secant where the
    measurement rose with the target, held to twice the scaled step (a line flattened by
    noisy measurements would jump from 0.643 to 0.35); a measurement that fell as the target
    rose falls back to scaling."""
    from sosp.api import _next_target

    def rounds(*pairs):
        return [{"target": t, "measured_fraction": m} for t, m in pairs]

    assert _next_target(rounds((0.5, 0.625)), 0.5) == pytest.approx(0.4)
    steep = rounds((0.5, 0.7), (0.4, 0.6))  # the secant: 0.4 + (0.5 - 0.6) / 1.0
    assert _next_target(steep, 0.5) == pytest.approx(0.3)
    flat = rounds((0.7, 0.762), (0.643, 0.752))  # secant 0.35; scaled 0.5985, step 0.0445
    assert _next_target(flat, 0.7) == pytest.approx(0.643 - 2 * (0.643 - 0.643 * 0.7 / 0.752))
    falling = rounds((0.5, 0.6), (0.4, 0.65))
    assert _next_target(falling, 0.5) == pytest.approx(0.4 * 0.5 / 0.65)


def test_the_choice_follows_the_networks_timed_together(table_path, monkeypatch):
    """Where the networks timed together at the end measure otherwise than each did alone (the
    machine's speed moved), the choice and the report follow the joint measurement: here it
    finds the table's own network exactly as asked, though alone it measured 0.9."""

    def moving(ranking, networks):
        if len(networks) == 1:
            return [{"dense": 1.0, "pruned": 0.9}]
        return [{"dense": 2.0, "pruned": 1.2}] + [{"dense": 2.0, "pruned": 1.9}] * (
            len(networks) - 1
        )

    monkeypatch.setattr(sosp.api, "_measured_ms", moving)
    kw = dict(n_samples=16, budget="latency", latency_table=str(table_path))
    r = sosp.prune(resnet20(), "sosp_h", 0.4, batches(), latency_corrections=1, **kw)
    lat = r.report["latency"]
    assert [c["chosen"] for c in lat["corrections"]] == [True, False]
    assert [c["final_fraction"] for c in lat["corrections"]] == [0.6, 0.95]
    assert (lat["dense_ms"], lat["measured_ms"]) == (2.0, 1.2)
