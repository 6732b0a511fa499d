"""Pruning in rounds during training: the schedule's fractions, the soft-masked training that
takes the steps of the physically pruned network, and a run through `fit` that ends pruned
and resumes across rounds to the same weights."""

import json

import pytest
import torch
from torch import nn

from sosp import data, loaders
from sosp.errors import BadInput
from sosp.recipes import Recipe
from sosp.rounds import RoundPruner, RoundsPlan, cumulative_fractions, round_ratios
from sosp.settings import PruneSettings
from sosp.structures import analyze
from sosp.surgery import build_pruned
from sosp.train import Preempted, fit
from tests.test_train import _StopAfter


@pytest.mark.parametrize("target,rounds", [(0.65, 1), (0.65, 5), (0.9, 25)])
def test_rounds_remove_the_target_with_their_closed_form(target, rounds):
    """Round k removes p / (k p + R (1 - p)) of what is left; after round k the fraction left
    is (1 - p) / (1 - (R - k) p / R) (the product telescopes), so after R rounds it is 1 - p."""
    ratios = round_ratios(target, rounds)
    left = 1.0
    for k, r in enumerate(ratios, 1):
        left *= 1 - r
        assert left == pytest.approx((1 - target) / (1 - (rounds - k) * target / rounds))
    assert cumulative_fractions(target, rounds)[-1] == pytest.approx(target)
    assert ratios[0] == pytest.approx(target) if rounds == 1 else ratios[0] < target


def test_a_bad_plan_is_refused_with_its_fix():
    """A target outside (0, 1), zero rounds or an unknown method stop before training."""
    with pytest.raises(BadInput, match=r"\(0, 1\)"):
        RoundsPlan("magnitude", 1.2)
    with pytest.raises(BadInput, match="at least 1"):
        RoundsPlan("magnitude", 0.5, rounds=0)
    with pytest.raises(Exception, match="known methods"):
        RoundsPlan("magnitud", 0.5)


def _net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    ).to(dtype)  # fmt: skip


def test_soft_masked_training_takes_the_physically_pruned_networks_steps():
    """SGD (momentum, weight decay, BatchNorm in train mode) on the soft-masked network, dead
    entries re-zeroed after each step, ends at the weights SGD reaches on the physically
    pruned network started from the same weights."""
    net = _net(torch.float64)
    pruner = RoundPruner(RoundsPlan("magnitude", 0.5), [], (1, 8, 8))
    pruner.start(net, None, None)
    pruner.pruned = [1, 4, 8, 9, 13]  # conv 0: channels 1, 4; conv 3: channels 0, 1, 5
    pruner._mask(net)
    small = build_pruned(pruner.graph, pruner.pruned)
    g = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(16, 1, 8, 8, generator=g).double(), torch.randint(10, (16,), generator=g))
        for _ in range(6)
    ]
    for model, hook in ((net, pruner), (small, None)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        model.train()
        for x, y in batches:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if hook:
                hook.after_step(model, opt)
    trained = build_pruned(analyze(net, (1, 8, 8)), pruner.pruned)
    for (k, a), (_, b) in zip(
        trained.state_dict().items(), small.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=k)


def _rounds_run(out, logger=None, method="loss_preservation"):
    """`fit` of `_net` on 256 digits for 4 epochs, pruning half the filters in 2 rounds after
    epochs 1 and 2 by `method` on 64 samples."""
    net = _net()
    recipe = Recipe(epochs=4, batch_size=64, lr=0.05, schedule="constant", milestones=(),
                    augment=False)  # fmt: skip
    meta = data.info("digits")
    x, y = data.tensors("digits", "train")
    train = loaders.TensorLoader(x[:256], y[:256], meta, 64, shuffle=True, augment=False, seed=0)
    xt, yt = data.tensors("digits", "test")
    test = loaders.TensorLoader(xt[:128], yt[:128], meta, 128, shuffle=False, augment=False)
    plan = RoundsPlan(method, 0.5, rounds=2, settings=PruneSettings(n_samples=64))
    hook = RoundPruner(plan, [(x[:64], y[:64])], meta.input_shape)
    metrics = fit(
        net, recipe, train, test, out, config={"recipe": recipe.as_dict()},
        architecture={"model": "tiny", "dataset": "digits"}, logger=logger, progress=False,
        hooks=[hook],
    )  # fmt: skip
    return metrics, torch.load(out / "model.pt", weights_only=False)


def test_a_run_pruned_in_rounds_ends_physically_pruned(tmp_path):
    """The rounds prune after epochs 1 and 2 (cumulative 1/3 and 1/2 of the 16 filters), the
    metrics rows say so, and the saved network is the physically pruned one with its mask."""
    metrics, saved = _rounds_run(tmp_path / "run")
    rows = metrics["epochs"]
    assert [r.get("pruning_round") for r in rows] == [1, 2, None, None]
    assert rows[1]["structures_removed"] == 0.5
    pruned = sum(len(c) for c in saved["mask"].values())
    assert pruned == 8
    kept = saved["state_dict"]["0.weight"].shape[0] + saved["state_dict"]["3.weight"].shape[0]
    assert kept == 16 - pruned
    assert [r["pruned_structures"] for r in saved["rounds"]] == [
        round(16 * cumulative_fractions(0.5, 2)[0]),
        8,
    ]


def test_a_run_stopped_between_rounds_resumes_to_the_same_pruned_weights(tmp_path):
    """Stopped by SIGTERM after epoch 1 (after the first round), the resumed run prunes its
    second round from the checkpointed mask and ends with the weights of an uninterrupted run."""
    _, whole = _rounds_run(tmp_path / "whole")
    with pytest.raises(Preempted):
        _rounds_run(tmp_path / "stopped", logger=_StopAfter(1))
    ckpt = torch.load(tmp_path / "stopped" / "last.pt", weights_only=False)
    assert len(ckpt["hooks"]["rounds"]["pruned"]) > 0
    _, resumed = _rounds_run(tmp_path / "stopped")
    assert resumed["mask"] == whole["mask"]
    for k, v in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][k], v, rtol=0, atol=0, msg=k)
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert metrics["config"]["hook_rounds"]["rounds"] == 2
