"""Training hooks (`sosp.hooks.Hook`) of weight-level pruning: a weight mask kept through
training, pruned further at chosen epochs (IMP's prune-retrain cycles, gradual magnitude
pruning), the per-step learning rate of the retraining schedules, and STR.

    KeepMask(targets={epoch: sparsity}, allocation, mask)   masked weights and their momentum
        stay zero after every step; at the end of each epoch in `targets` (0: before training)
        the mask is recomputed by magnitude at that sparsity among the weights still kept
    imp_targets(s, cycles, epochs_per_cycle)   IMP: cycle p (0-based) starts at sparsity
        1 - (1 - s)^((p + 1) / cycles), so each cycle prunes the same fraction of what is left
    gmp_targets(s, interval, epochs)    GMP (Zhu & Gupta, 2017): at t = interval * j,
        j = 1..n with n = epochs // interval - 1, sparsity s (1 - (1 - t / (interval n))^3)
    StepLR(recipe, steps_per_epoch)     the lr of `sosp.train.lr_at` at every step's fraction
    STR(model, s_init)                  soft threshold reparameterization (Kusupati et al.,
        2020): w = sign(v) relu(|v| - sigmoid(s_l)), one learnable s_l per layer; at the end
        the weights it zeroed are the mask
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from sosp import unstructured
from sosp.allocation import check_sparsity
from sosp.errors import BadInput
from sosp.hooks import Hook
from sosp.recipes import Recipe


def imp_targets(sparsity: float, cycles: int, epochs_per_cycle: int) -> dict[int, float]:
    """{epoch at which cycle p starts: its sparsity} of IMP with `cycles` prune-retrain cycles."""
    check_sparsity(sparsity)
    return {p * epochs_per_cycle: 1 - (1 - sparsity) ** ((p + 1) / cycles) for p in range(cycles)}


def gmp_targets(sparsity: float, interval: int, epochs: int) -> dict[int, float]:
    """{epoch: sparsity} of gradual magnitude pruning every `interval` epochs of `epochs`."""
    check_sparsity(sparsity)
    steps = epochs // interval - 1
    if interval < 1 or steps < 1:
        raise BadInput(
            f"GMP prunes every {interval} epochs and needs two intervals in the {epochs} "
            f"epochs of training; choose an interval of at most {epochs // 2}"
        )
    end = interval * steps
    return {
        interval * j: sparsity * (1 - (1 - interval * j / end) ** 3) for j in range(1, steps + 1)
    }


class KeepMask(Hook):
    """Keeps a weight mask, recomputed at the epochs of `targets` (see the module doc).
    `probe(model)`: the test accuracy, recorded right after each pruning (the next epoch's
    metrics row gets it as `acc_after_pruning`)."""

    name = "weight_mask"

    def __init__(
        self,
        targets: dict[int, float] | None = None,
        allocation: str = "global",
        mask: unstructured.WeightMask | None = None,
        probe: Callable[[nn.Module], float] | None = None,
        label: str = "keep",
    ):
        self.targets = dict(targets or {})
        self.allocation = allocation
        self.mask = mask
        self.probe = probe
        self.label = label
        self.pending: dict = {}

    def config(self) -> dict:
        return {
            "kind": self.label,
            "allocation": self.allocation,
            "targets": {str(e): s for e, s in sorted(self.targets.items())},
            "initial_mask": self.mask is not None and not self.targets.get(0),
        }

    def start(self, model: nn.Module, optimizer, out: Path) -> None:
        if self.mask is not None:
            self.mask = unstructured.on_device(self.mask, model)
            unstructured.apply(model, self.mask, optimizer)

    def after_step(self, model: nn.Module, optimizer) -> None:
        if self.mask is not None:
            unstructured.apply(model, self.mask, optimizer)

    def after_epoch(self, epoch: int, model: nn.Module, optimizer) -> dict:
        row, self.pending = self.pending, {}
        if epoch in self.targets:
            sparsity = self.targets[epoch]
            self.mask = unstructured.magnitude_mask(model, sparsity, self.allocation, self.mask)
            unstructured.apply(model, self.mask, optimizer)
            self.pending = {"pruned_to": sparsity}
            if self.probe is not None:
                self.pending["acc_after_pruning"] = self.probe(model)
        return row

    def state_dict(self) -> dict:
        mask = unstructured.to_cpu(self.mask) if self.mask is not None else None
        return {"mask": mask, "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mask") is not None:
            self.mask = state["mask"]
        self.pending = state.get("pending", {})

    def finish(self, model: nn.Module) -> tuple[nn.Module, dict]:
        if self.mask is None:
            return model, {}
        return model, {unstructured.MODEL_FILE_KEY: unstructured.to_cpu(self.mask)}


class StepLR(Hook):
    """Sets the lr after every step to `lr_at(recipe, epoch + steps / steps_per_epoch)`, so a
    schedule changes within an epoch (fit sets the epoch's first step's lr itself)."""

    name = "step_lr"

    def __init__(self, recipe: Recipe, steps_per_epoch: int):
        self.recipe, self.steps_per_epoch = recipe, steps_per_epoch
        self.epoch, self.step = 0, 0

    def after_step(self, model: nn.Module, optimizer) -> None:
        from sosp.train import lr_at

        self.step += 1
        lr = lr_at(self.recipe, self.epoch + self.step / self.steps_per_epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr

    def after_epoch(self, epoch: int, model: nn.Module, optimizer) -> dict:
        self.epoch, self.step = epoch, 0
        return {}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state.get("epoch", 0), state.get("step", 0)


class SoftThreshold(nn.Module):
    """STR's parametrization of one weight: sign(v) relu(|v| - sigmoid(s)), s learnable."""

    def __init__(self, s_init: float, device=None):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s_init), device=device))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sign(v) * torch.relu(v.abs() - torch.sigmoid(self.s))


class STR(Hook):
    """Soft threshold reparameterization of every prunable weight, registered on `model` when
    the hook is made (before `fit` builds the optimizer, so the thresholds train with the
    weights, weight decay included). `finish` makes the thresholded weights plain again and
    returns their zeros as the weight mask."""

    name = "str"

    def __init__(self, model: nn.Module, s_init: float):
        self.s_init = s_init
        for module in model.modules():
            if isinstance(module, unstructured.PRUNABLE):
                device = module.weight.device
                parametrize.register_parametrization(
                    module, "weight", SoftThreshold(s_init, device)
                )

    def config(self) -> dict:
        return {"s_init": self.s_init}

    def finish(self, model: nn.Module) -> tuple[nn.Module, dict]:
        for module in model.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        mask = {name: (w != 0).cpu() for name, w in unstructured.prunable(model).items()}
        return model, {unstructured.MODEL_FILE_KEY: mask}
