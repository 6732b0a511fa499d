"""The command registry: every module of `sosp.commands` that defines a command is listed once,
under a unique name, and builds a parser of its own."""

import argparse
import importlib
import pkgutil

import sosp.commands
from sosp.commands import registry
from sosp.commands.base import Command


def test_every_defined_command_is_registered_once():
    """Each `Command` a module of the package defines appears in the registry exactly once."""
    defined = []
    for info in pkgutil.iter_modules(sosp.commands.__path__):
        module = importlib.import_module(f"sosp.commands.{info.name}")
        defined += [v for v in vars(module).values() if isinstance(v, Command)]
    assert sorted(c.name for c in defined) == sorted(registry.names())
    assert len(set(registry.names())) == len(registry.COMMANDS)


def test_the_order_is_the_pipeline_order():
    assert registry.names() == [
        "models",
        "count",
        "prune",
        "train",
        "finetune",
        "evaluate",
        "export",
    ]


def test_each_command_declares_its_arguments_alone():
    """`add_arguments` works on a fresh parser (no command depends on another's options), and
    every command has help text."""
    for command in registry.COMMANDS:
        command.add_arguments(argparse.ArgumentParser())
        assert command.help and callable(command.run)
