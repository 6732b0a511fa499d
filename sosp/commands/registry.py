"""Every `sosp` subcommand, in the order `sosp --help` lists them. A new command is a module
in this package with a `Command` (see `sosp.commands.base`) and one entry here."""

from __future__ import annotations

from sosp.commands import count, evaluate, export, models, prune, train
from sosp.commands.base import Command

COMMANDS: tuple[Command, ...] = (
    models.COMMAND,
    count.COMMAND,
    prune.COMMAND,
    train.TRAIN,
    train.FINETUNE,
    evaluate.COMMAND,
    export.COMMAND,
)


def names() -> list[str]:
    return [c.name for c in COMMANDS]
