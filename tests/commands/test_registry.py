"""The command registry: every `Command` a module of `sosp.commands` defines is listed once,
under a unique name with a help line, and builds a parser of its own."""

import argparse
import importlib
import pkgutil

import sosp.commands
from sosp.commands import registry
from sosp.commands.base import Command


def test_every_defined_command_is_registered_once():
    """Each `Command` a module of the package defines is the target of exactly one entry, and
    every entry loads a `Command`."""
    defined = []
    for info in pkgutil.iter_modules(sosp.commands.__path__):
        module = importlib.import_module(f"sosp.commands.{info.name}")
        defined += [v for v in vars(module).values() if isinstance(v, Command)]
    loaded = [e.load() for e in registry.ENTRIES]
    assert all(isinstance(c, Command) for c in loaded)
    assert sorted(map(id, loaded)) == sorted(map(id, defined))
    assert len(set(registry.names())) == len(registry.ENTRIES)


def test_the_order_is_the_pipeline_order():
    assert registry.names() == [
        "models",
        "count",
        "latency-table",
        "prune",
        "import",
        "bottlenecks",
        "train",
        "finetune",
        "retrain",
        "evaluate",
        "export",
    ]


def test_each_command_declares_its_arguments_alone():
    """`add_arguments` works on a fresh parser (no command depends on another's options), and
    every command has help text."""
    for entry in registry.ENTRIES:
        command = entry.load()
        command.add_arguments(argparse.ArgumentParser())
        assert entry.help and callable(command.run)
