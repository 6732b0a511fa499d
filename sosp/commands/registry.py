"""Every `sosp` subcommand, in the order `sosp --help` lists them: its name, its line of help and
where its `Command` (see `sosp.commands.base`) lives. A command's module, and torch with it, is
imported only when that command is parsed, so `sosp --help` and `sosp --version` start without
torch. A new command is a module in this package with a `Command` and one entry here."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sosp.commands.base import Command


@dataclass(frozen=True)
class Entry:
    name: str
    help: str
    target: str  # "module:attribute" of the command's `Command`, module in sosp.commands

    def load(self) -> Command:
        """The command's `Command`, importing its module."""
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(f"sosp.commands.{module}"), attribute)


ENTRIES: tuple[Entry, ...] = (
    Entry("models", "list the model zoo, or (--timm) which CNN families prune", "models:COMMAND"),
    Entry("count", "count the parameters and MACs of a (pruned) architecture", "count:COMMAND"),
    Entry(
        "latency-table",
        "time each operation here, for --budget latency",
        "latency_table:COMMAND",
    ),
    Entry("prune", "compute a pruning mask and the physically pruned network", "prune:COMMAND"),
    Entry(
        "import",
        "pretrained weights (sha256-checked) as a model file",
        "import_weights:COMMAND",
    ),
    Entry(
        "bottlenecks",
        "least pruned units of masks, as a width spec (expand-pruning)",
        "bottlenecks:COMMAND",
    ),
    Entry("train", "train a zoo model from its seeded random initialization", "train:TRAIN"),
    Entry("finetune", "train pruned networks (from `sosp prune`) further", "train:FINETUNE"),
    Entry("retrain", "prune weights by magnitude and retrain them (IMP)", "retrain:COMMAND"),
    Entry("evaluate", "test accuracy, loss, params and MACs of saved networks", "evaluate:COMMAND"),
    Entry("export", "export a pruned network to ONNX, TorchScript or pt2", "export:COMMAND"),
)


def names() -> list[str]:
    return [e.name for e in ENTRIES]


def entry(name: str) -> Entry:
    return ENTRIES[names().index(name)]
