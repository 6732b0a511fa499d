"""Hooks of weight-level pruning: IMP's and GMP's sparsity targets against their formulas, the
mask kept through training (weights and momentum zero), the per-step lr, STR's thresholds, and
a run stopped by SIGTERM resuming to the weights and mask of an uninterrupted one."""

import signal

import pytest
import torch
from torch import nn

from sosp import data, loaders, recipes, unstructured
from sosp.recipes import Recipe
from sosp.sparse_hooks import STR, KeepMask, SoftThreshold, StepLR, gmp_targets, imp_targets
from sosp.train import Preempted, fit, lr_at


def test_imp_targets_prune_the_same_fraction_of_what_is_left_each_cycle():
    """Cycle p of k starts at 1 - (1 - s)^((p+1)/k): the density shrinks by one factor per cycle
    and ends at 1 - s."""
    t = imp_targets(0.936, 3, 10)
    assert list(t) == [0, 10, 20]
    assert t[20] == pytest.approx(0.936)
    densities = [1 - t[e] for e in (0, 10, 20)]
    assert densities[1] / densities[0] == pytest.approx(densities[0])
    assert densities[2] / densities[1] == pytest.approx(densities[0])
    assert densities[0] == pytest.approx(0.4)  # 0.064 ** (1/3)


def test_gmp_targets_follow_the_cubic_schedule():
    """Zhu & Gupta: at t = i j (j = 1..n, n = E // i - 1), s (1 - (1 - t / (i n))^3)."""
    t = gmp_targets(0.9, 2, 12)  # n = 5, pruning at 2, 4, ..., 10
    assert list(t) == [2, 4, 6, 8, 10]
    assert [t[e] for e in t] == pytest.approx([0.9 * (1 - (1 - e / 10) ** 3) for e in t])
    assert t[10] == pytest.approx(0.9)


def test_gmp_refuses_an_interval_without_room():
    """GMP needs two intervals within training."""
    with pytest.raises(Exception, match="at most 3"):
        gmp_targets(0.9, 4, 7)


def test_soft_threshold_is_sign_times_shrunk_magnitude():
    """STR: w = sign(v) max(|v| - sigmoid(s), 0), entry by entry."""
    f = SoftThreshold(0.0)  # threshold sigmoid(0) = 0.5
    v = torch.tensor([-1.0, -0.4, 0.2, 0.5, 2.0])
    assert f(v).tolist() == pytest.approx([-0.5, 0.0, 0.0, 0.0, 1.5])


def test_str_thresholds_train_and_finish_returns_the_zeros_as_mask():
    """STR's thresholds are parameters (they receive gradients); `finish` leaves plain weights
    whose zeros are exactly the mask it returns."""
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    hook = STR(net, 0.0)
    names = [n for n, _ in net.named_parameters()]
    assert sum(n.endswith(".s") for n in names) == 2
    net(torch.randn(3, 4)).sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if n.endswith(".s"))
    net, entries = hook.finish(net)
    mask = entries[unstructured.MODEL_FILE_KEY]
    assert set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, w in unstructured.prunable(net).items():
        assert torch.equal(mask[name], w != 0)


def test_step_lr_sets_the_schedule_at_each_steps_fraction():
    """After step i of n in epoch e the optimizer's lr is lr_at(recipe, e + i / n)."""
    recipe = recipes.retraining(Recipe(epochs=8, schedule="cosine", milestones=()), "clr", 4)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    hook = StepLR(recipe, steps_per_epoch=5)
    hook.after_epoch(2, None, opt)
    for i in range(1, 4):
        hook.after_step(None, opt)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(recipe, 2 + i / 5))


class _StopAfter:
    """A logger that sends this process SIGTERM once epoch `epoch` is logged."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def log(self, row: dict, step: int) -> None:
        if step == self.epoch:
            signal.raise_signal(signal.SIGTERM)


def _imp_run(out, logger=None):
    """IMP on a small conv net and 256 digits: 3 cycles of 2 epochs by SLR to sparsity 0.9."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    original = Recipe(epochs=6, batch_size=64, lr=0.1, schedule="cosine", milestones=(),
                      augment=False)  # fmt: skip
    recipe = recipes.retraining(original, "slr", 2, cycles=3)
    meta = data.info("digits")
    x, y = data.tensors("digits", "train")
    train = loaders.TensorLoader(x[:256], y[:256], meta, 64, shuffle=True, augment=False, seed=0)
    test = loaders.TensorLoader(x[:128], y[:128], meta, 128, shuffle=False, augment=False)
    seen = []
    keep = KeepMask(imp_targets(0.9, 3, 2), "global", label="imp")
    spy = _MaskSpy(keep, seen)
    metrics = fit(
        net, recipe, train, test, out, config={"recipe": recipe.as_dict()},
        architecture={"model": "tiny", "dataset": "digits"}, logger=logger, progress=False,
        hooks=[keep, StepLR(recipe, len(train)), spy],
    )  # fmt: skip
    return net, keep, metrics, seen


class _MaskSpy:
    """After every step, whether the masked weights and their momentum were zero."""

    name = "spy"

    def __init__(self, keep, seen):
        self.keep, self.seen = keep, seen

    def config(self):
        return {}

    def start(self, *a):
        pass

    def after_epoch(self, *a):
        return {}

    def after_step(self, model, opt):
        if self.keep.mask is None:
            return
        for name, w in unstructured.prunable(model).items():
            off = ~self.keep.mask[name]
            momentum = opt.state[w].get("momentum_buffer")
            self.seen.append(bool(w[off].any()) or bool(momentum[off].any()))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def finish(self, model):
        return model, {}


def test_imp_keeps_its_mask_and_resumes_to_the_same_weights(tmp_path):
    """Through IMP's 3 cycles the masked weights and momentum stay zero after every step, the
    final sparsity is 0.9 of the prunable weights, and a
    run stopped after epoch 3 resumes to the weights and mask of an uninterrupted run."""
    net, keep, whole, seen = _imp_run(tmp_path / "whole")
    assert seen and not any(seen)
    kept = sum(int(m.sum()) for m in keep.mask.values())
    total = sum(m.numel() for m in keep.mask.values())
    assert kept == total - round(0.9 * total)
    assert [r.get("pruned_to") for r in whole["epochs"]] == pytest.approx(
        [1 - 0.1 ** (1 / 3), None, 1 - 0.1 ** (2 / 3), None, 0.9, None]
    )
    with pytest.raises(Preempted):
        _imp_run(tmp_path / "stopped", logger=_StopAfter(3))
    again, keep2, resumed, _ = _imp_run(tmp_path / "stopped")
    whole_weights = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    resumed_weights = torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)
    for k, v in whole_weights["state_dict"].items():
        assert torch.equal(v, resumed_weights["state_dict"][k]), k
    for k, m in whole_weights[unstructured.MODEL_FILE_KEY].items():
        assert torch.equal(m, resumed_weights[unstructured.MODEL_FILE_KEY][k])
    del whole["wall_seconds"], resumed["wall_seconds"]
    assert resumed == whole
