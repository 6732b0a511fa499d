"""Pruning during training, in rounds (Lubana & Dick's schedule): after each of R chosen
epochs, a method scores the structures still alive and the lowest are pruned until the
cumulative fraction of that round is reached; training goes on with them held at zero (a soft
mask, re-applied after every step). The run ends with the physically pruned network.

Round k of R removes the fraction p / (k p + R (1 - p)) of what is left, so that after R rounds
a fraction p of the structures is gone, most of it early (their code's default schedule).

With the optimizer's momentum cleared at each round (their default: a fresh optimizer for the
pruned network), training the soft-masked network takes the same steps as training the
physically pruned one: dead channels output exact zeros, alive weights get the gradients they
would get without the dead ones, and the dead weights are zeroed again after every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sosp import counting, methods
from sosp.api import layer_index, removed_fraction
from sosp.curvature import Batch
from sosp.errors import BadInput
from sosp.hooks import Hook
from sosp.selection import Saliency, layer_caps, order, prefix_for_budget
from sosp.settings import PruneSettings
from sosp.structures import StructureGraph, analyze
from sosp.surgery import apply_soft_mask, build_pruned, mask_from_indices


def round_ratios(target: float, rounds: int) -> list[float]:
    """[R] the fraction of the remaining structures round k = 1..R removes:
    p / (k p + R (1 - p)); their product of (1 - ratio) is 1 - p."""
    if not 0 < target < 1:
        raise BadInput(f"the pruning target must lie in (0, 1), not {target}")
    if rounds < 1:
        raise BadInput(f"the number of pruning rounds must be at least 1, not {rounds}")
    return [target / (k * target + rounds * (1 - target)) for k in range(1, rounds + 1)]


def cumulative_fractions(target: float, rounds: int) -> list[float]:
    """[R] the fraction of all structures pruned after each round (the last is `target`)."""
    left, out = 1.0, []
    for r in round_ratios(target, rounds):
        left *= 1 - r
        out.append(1 - left)
    return out


@dataclass(frozen=True)
class RoundsPlan:
    """What to prune when: `method` (with `options`) under `settings` removes `target` of the
    `settings.budget` quantity over `rounds` rounds, after epochs start, start + every, ...
    `reset_momentum`: clear the optimizer's state at each round (their default)."""

    method: str
    target: float
    rounds: int = 1
    start: int = 1
    every: int = 1
    settings: PruneSettings = field(default_factory=PruneSettings)
    options: dict = field(default_factory=dict)
    reset_momentum: bool = True

    def __post_init__(self) -> None:
        round_ratios(self.target, self.rounds)  # checks target and rounds
        if self.start < 1 or self.every < 1:
            raise BadInput("pruning rounds start after epoch >= 1 and come every >= 1 epochs")
        methods.get(self.method)  # an unknown method fails here, before training

    @property
    def epochs(self) -> list[int]:
        """The epochs (1-based, counted done) after which the rounds prune."""
        return [self.start + k * self.every for k in range(self.rounds)]

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "target": self.target,
            "rounds": self.rounds,
            "epochs": self.epochs,
            "settings": {  # as JSON reads it back, so a finished run's config compares equal
                k: list(v) if isinstance(v, tuple) else v
                for k, v in ((k, getattr(self.settings, k)) for k in PruneSettings.names())
            },
            "options": self.options,
            "reset_momentum": self.reset_momentum,
        }


class RoundPruner(Hook):
    """The `sosp.train.fit` hook that prunes by `plan` on `batches` (the N' samples), for
    inputs of `input_shape` (one sample's, e.g. (3, 32, 32))."""

    name = "rounds"

    def __init__(self, plan: RoundsPlan, batches: Sequence[Batch], input_shape: Sequence[int]):
        self.plan = plan
        self.batches = list(batches)
        self.input_shape = tuple(input_shape)
        self.pruned: list[int] = []  # structure indices, in the order pruned
        self.history: list[dict] = []  # per round: epoch, structures pruned, fractions
        self.graph: StructureGraph | None = None
        self.keep: list[tuple[nn.Parameter, torch.Tensor]] = []  # (param, 0/1 of entries kept)

    def config(self) -> dict:
        return self.plan.as_dict()

    def start(self, model: nn.Module, optimizer, out: Path) -> None:
        s = self.plan.settings
        self.graph = analyze(model, self.input_shape, s.exclude, s.coupling)
        self._mask(model)

    def after_step(self, model: nn.Module, optimizer) -> None:
        with torch.no_grad():
            for p, keep in self.keep:
                p.mul_(keep)

    def after_epoch(self, epoch: int, model: nn.Module, optimizer) -> dict:
        if epoch not in self.plan.epochs:
            if self.pruned:
                apply_soft_mask(self.graph, self.pruned)  # BN statistics of dead channels too
            return {}
        k = self.plan.epochs.index(epoch)
        fraction = cumulative_fractions(self.plan.target, self.plan.rounds)[k]
        self.pruned = self._next_mask(model, fraction)
        self._mask(model)
        if self.plan.reset_momentum:
            optimizer.state.clear()
        total = len(self.graph.structures)
        entry = {
            "round": k + 1,
            "epoch": epoch,
            "pruned_structures": len(self.pruned),
            "structures_removed": len(self.pruned) / total,
            "target_after_round": fraction,
        }
        self.history.append(entry)
        return {"pruning_round": k + 1, "structures_removed": len(self.pruned) / total}

    def state_dict(self) -> dict:
        return {"pruned": list(self.pruned), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.pruned = list(state.get("pruned", []))
        self.history = list(state.get("history", []))

    def finish(self, model: nn.Module) -> tuple[nn.Module, dict]:
        """The physically pruned network and its mask (all rounds' structures)."""
        small = build_pruned(self.graph, self.pruned)
        entries = {
            "mask": mask_from_indices(self.graph, self.pruned),
            "exclude": self.plan.settings.exclude_list,
            "rounds": self.history,
        }
        return small, entries

    # -- one round ------------------------------------------------------------------------------

    def _mask(self, model: nn.Module) -> None:
        """Zero the pruned structures and record which parameter entries stay zero."""
        if not self.pruned:
            return
        frozen = held_at_zero(self.graph, self.pruned)
        params = dict(model.named_parameters())
        self.keep = [
            (params[k], (~dead).to(params[k].dtype))
            for k, dead in frozen.items()
            if k in params and dead.any()
        ]
        apply_soft_mask(self.graph, self.pruned)

    def _next_mask(self, model: nn.Module, fraction: float) -> list[int]:
        """The structures pruned after this round: the ones pruned before, then the lowest
        scored of the others until `fraction` of the budget is removed."""
        plan, graph = self.plan, self.graph
        s = plan.settings
        frozen = held_at_zero(graph, self.pruned) if self.pruned else None
        ctx = methods.Context(
            model, graph, self.batches, s.loss, s.n_samples, s.seed, frozen=frozen
        )
        saliency = methods.get(plan.method)(ctx, **plan.options)
        saliency.check_finite(plan.method)
        if saliency.scores is None:
            raise BadInput(
                f"pruning in rounds ranks structures by scores; {plan.method!r} gives SOSP-I's "
                "matrix: use sosp_h, a gradient-flow measure or another score method"
            )
        scores = saliency.scores.double().cpu().clone()
        scores[self.pruned] = -math.inf  # already pruned: first in every order
        layer_of, sizes = layer_index(graph)
        caps = layer_caps(sizes, s.max_layer_fraction)
        full = order(Saliency(scores=scores), layer_of, caps, s.scope)
        dense = counting.count(graph.gm, self.input_shape)
        chosen = prefix_for_budget(
            full,
            fraction,
            s.budget,
            len(graph.structures),
            lambda p: removed_fraction(graph, p, dense, self.input_shape, s.budget),
        )
        before = set(self.pruned)
        return self.pruned + [i for i in chosen if i not in before]


def held_at_zero(graph: StructureGraph, pruned: Sequence[int]) -> dict[str, torch.Tensor]:
    """{parameter name: bool mask} of the parameter entries `apply_soft_mask(graph, pruned)`
    sets to zero, found by applying it to parameters of ones (the model is left as it was)."""
    gm = graph.gm
    saved = {k: v.detach().clone() for k, v in gm.state_dict().items()}
    try:
        with torch.no_grad():
            for p in gm.parameters():
                p.fill_(1)
            apply_soft_mask(graph, pruned)
            return {k: p == 0 for k, p in gm.named_parameters()}
    finally:
        gm.load_state_dict(saved)
