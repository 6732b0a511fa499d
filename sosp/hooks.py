"""What `sosp.train.fit` calls around training, for work that happens during a run rather
than before or after it: pruning in rounds (`sosp.rounds`), weight masks kept through training,
measurements at chosen epochs (`sosp.flow_probe`).

A hook's state is saved in the run's checkpoint after every epoch, after the hook ran, so a
resumed run goes on with the hook where it was. Its `config` joins the run's config, so a
checkpoint written under other hook settings is refused.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn


class Hook:
    """No-op defaults; a hook overrides what it needs. `name` keys its state in checkpoints."""

    name: str = "hook"

    def config(self) -> dict:
        """The settings that define what this hook does (part of the run's config)."""
        return {}

    def start(self, model: nn.Module, optimizer, out: Path) -> None:
        """Called once before the first epoch this process trains (after any resume)."""

    def after_step(self, model: nn.Module, optimizer) -> None:
        """Called after every optimizer step."""

    def after_epoch(self, epoch: int, model: nn.Module, optimizer) -> dict:
        """Called when `epoch` epochs are done (0: before training, once). Returns entries for
        the epoch's metrics row (ignored for epoch 0)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def finish(self, model: nn.Module) -> tuple[nn.Module, dict]:
        """(the network the run saves, entries added to its architecture) once training ends:
        e.g. the physically pruned network and its mask."""
        return model, {}
