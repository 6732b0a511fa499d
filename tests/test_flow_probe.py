"""The gradient-flow measurements during training: per-filter values against their
definitions, the correlations against pandas, the early-bird mask distance, and a run through
`fit` that writes flow.json and resumes with the probe's state."""

import json

import pandas as pd
import pytest
import torch
from torch import nn

from sosp.curvature import flow_terms
from sosp.flow_probe import FlowProbe, mask_distance, pearson, spearman
from tests.test_rounds import _net


def test_correlations_match_pandas():
    """pearson and spearman agree with pandas' on random vectors."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    b = b + a
    frame = pd.DataFrame({"a": a.numpy(), "b": b.numpy()})
    assert pearson(a, b) == pytest.approx(frame.corr("pearson").loc["a", "b"])
    assert spearman(a, b) == pytest.approx(frame.corr("spearman").loc["a", "b"])


def test_mask_distance_is_the_fraction_of_changed_entries():
    """Two masks that differ in 2 of 8 entries are 0.25 apart."""
    a = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    assert mask_distance(a, b) == 0.25


def test_probe_values_follow_their_definitions():
    """At a probed epoch, each filter's magnitude is ||theta||^2, theta_g and theta_hg are theta
    dotted with g and H g of flow_terms, and theta_dtheta is |theta . (theta - theta of the
    last epoch)|; the correlations are over all filters; the early-bird mask distance compares
    the 20% smallest |BN scales| with the last epoch's."""
    net = _net(torch.float64).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=g).double(), torch.randint(10, (32,), generator=g)
    probe = FlowProbe([2], [(x, y)], (1, 8, 8), 32, temperature=2.0)
    probe.start(net, None, "/nonexistent")
    probe._write = lambda: None  # no run folder here
    probe.after_epoch(1, net, None)
    before = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(0.1 * torch.randn(net[0].weight.shape, generator=g).double())
        net[1].weight.copy_(torch.arange(8, dtype=torch.float64))  # mask: channels 0, 1, 2
    row = probe.after_epoch(2, net, None)
    record = probe.records[-1]
    terms = flow_terms(net, [(x, y)], "cross_entropy", 32, 2.0)
    theta = net[0].weight.detach().flatten(1)
    values = record["filters"]["0"]
    torch.testing.assert_close(
        torch.tensor(values["magnitude"], dtype=torch.float64), (theta**2).sum(1)
    )
    gv, hg = terms.grad["0.weight"].flatten(1), terms.hessian_grad["0.weight"].flatten(1)
    torch.testing.assert_close(
        torch.tensor(values["theta_g"], dtype=torch.float64), (theta * gv).sum(1)
    )
    torch.testing.assert_close(
        torch.tensor(values["theta_hg"], dtype=torch.float64), (theta * hg).sum(1)
    )
    dtheta = (theta * (theta - before.flatten(1))).sum(1).abs()
    torch.testing.assert_close(torch.tensor(values["theta_dtheta"], dtype=torch.float64), dtheta)
    joined = {
        k: torch.tensor(values[k] + record["filters"]["3"][k], dtype=torch.float64) for k in values
    }
    corr = record["correlation"]
    assert corr["hg_vs_g"]["pearson"] == pytest.approx(
        pearson(joined["theta_hg"], joined["theta_g"])
    )
    assert corr["dtheta_vs_loss_preservation"]["spearman"] == pytest.approx(
        spearman(joined["theta_dtheta"], joined["loss_preservation"])
    )
    scales = torch.cat([net[1].weight.abs(), net[4].weight.abs()]).detach()
    now = torch.zeros(16, dtype=torch.bool)
    now[scales.argsort()[:3]] = True  # round(0.2 * 16) = 3
    assert torch.equal(probe.previous["mask"], now)
    assert "mask_distance" in row


def test_a_probed_run_writes_flow_json_and_resumes_with_it(tmp_path):
    """fit with a probe at epochs 0 and 2 of 2 writes flow.json with both probes and one mask
    distance per epoch; a run stopped after epoch 1 resumes to the same file."""
    from sosp import data, loaders
    from sosp.recipes import Recipe
    from sosp.train import Preempted, fit
    from tests.test_train import _StopAfter

    def run(out, logger=None):
        net = _net()
        recipe = Recipe(epochs=2, batch_size=64, lr=0.05, schedule="constant", milestones=(),
                        augment=False)  # fmt: skip
        meta = data.info("digits")
        x, y = data.tensors("digits", "train")
        train = loaders.TensorLoader(x[:128], y[:128], meta, 64, shuffle=True, augment=False)
        probe = FlowProbe([0, 2], [(x[:32], y[:32])], meta.input_shape, 32)
        fit(net, recipe, train, train, out, config={}, architecture={"model": "tiny"},
            logger=logger, progress=False, hooks=[probe])  # fmt: skip
        return json.loads((out / "flow.json").read_text())

    whole = run(tmp_path / "whole")
    assert [p["epoch"] for p in whole["probes"]] == [0, 2]
    assert [d["epoch"] for d in whole["mask_distances"]] == [1, 2]
    with pytest.raises(Preempted):
        run(tmp_path / "stopped", _StopAfter(1))
    assert run(tmp_path / "stopped") == whole


def test_probe_needs_no_pruned_model():
    """The probe measures any network with prunable layers (here a plain sequential one)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 10))
    probe = FlowProbe([0], [(torch.randn(4, 1, 8, 8), torch.arange(4))], (1, 8, 8), 4)
    probe.start(net, None, "/nonexistent")
    probe._write = lambda: None
    probe.after_epoch(0, net, None)
    assert list(probe.records[0]["filters"]) == ["1"]
