"""The gradient-flow study in the workflow: pruning-in-rounds and measured dense jobs from a
config, run end to end on digits into records and figures, and the shipped study's DAG."""

import json
import re

import pytest

from tests.workflow.test_workflow import REPO, snakemake, write_config

FLOW = """
name: flow
device: cpu
resources: {default: {cpus_per_task: 1}}
experiments:
  rounds:
    dataset: digits
    models: [resnet20]
    methods: [loss_preservation]
    prune_at: [during]
    rounds: [2]
    ratios: [0.5]
    seeds: [0]
    n_samples: 32
    max_layer_fraction: 0.95
    probe: {epochs: [0, 2], n_samples: 32}
    train: {preset: digits, set: {epochs: 2}}
    figures: [flow_curves, accuracy_vs_rounds, layerwise_rounds, flow_correlation, flow_scatter]
"""


def test_rounds_and_probes_run_into_records_and_figures(tmp_path):
    """A config with prune_at: during and a probe trains a job pruning half the filters in two
    rounds (ending physically pruned) and the measured dense network; their records carry the
    rounds, curves and measurements, and every flow figure is drawn."""
    cfg = write_config(tmp_path, FLOW)
    r = snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    records = [
        rec for path in (tmp_path / "results/flow/runs/rounds").glob("*.json")
        for rec in json.loads(path.read_text())
    ]  # fmt: skip
    by = {rec["prune_at"]: rec for rec in records}
    assert set(by) == {"none", "rounds2"}
    assert [h["round"] for h in by["rounds2"]["rounds"]["history"]] == [1, 2]
    assert by["rounds2"]["rounds"]["history"][-1]["structures_removed"] == pytest.approx(
        0.5, abs=0.005
    )
    assert by["rounds2"]["params"] < by["none"]["params"]
    assert [row.get("pruning_round") for row in by["rounds2"]["curve"]] == [1, 2]
    assert [p["epoch"] for p in by["none"]["flow"]["probes"]] == [0, 2]
    for figure in ("flow_curves", "accuracy_vs_rounds", "layerwise_rounds",
                   "flow_correlation", "flow_scatter"):  # fmt: skip
        assert (tmp_path / f"figures/flow/rounds_{figure}.png").stat().st_size > 0


def test_shipped_study_prunes_in_their_rounds(tmp_path):
    """config/gradient_flow.yaml: a train job per (model, method, rounds 1/5/25, ratio, seed)
    pruning during training with the 95% layer cap on 2560 samples, ResNet-56's first conv
    excluded, and one measured dense network per model and seed, each evaluated."""
    cfg = REPO / "config" / "gradient_flow.yaml"
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    trains = [line for line in r.stdout.splitlines() if " sosp train " in line]
    rounds = [c for c in trains if "--prune-method" in c]
    probes = [c for c in trains if "--probe-epochs" in c]
    assert len(rounds) == 3 * (4 + 5) * 3 * 3 * 3 and len(probes) == 3 * 3
    assert {re.search(r"--prune-rounds (\d+)", c)[1] for c in rounds} == {"1", "5", "25"}
    assert all("max_layer_fraction=0.95" in c and "n_samples=2560" in c for c in rounds)
    assert all("conv1" in c for c in rounds if "--model resnet56" in c)
    assert re.search(rf"evaluate\s+{len(rounds) + len(probes)}\b", r.stdout)
