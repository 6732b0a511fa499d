"""The command reference: every `sosp` command's `--help`, from the parsers themselves."""

from __future__ import annotations

import argparse
import functools

from sosp import cli
from sosp.commands import registry

WIDTH = 100  # columns of the help text, whatever terminal builds the docs


def subparsers(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """name -> parser of each `sosp` subcommand, in `sosp --help`'s order."""
    action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def help_text(p: argparse.ArgumentParser) -> str:
    """`p.format_help()` at `WIDTH` columns."""
    p.formatter_class = functools.partial(argparse.HelpFormatter, width=WIDTH)
    return p.format_help().rstrip()


def markdown() -> str:
    """One section per command: its help line and its whole `--help`."""
    top = cli.parser()
    parts = ["```text", help_text(top), "```"]
    for name, p in subparsers(top).items():
        parts += ["", f"## sosp {name}", "", registry.entry(name).help + ".", ""]
        parts += ["```text", help_text(p), "```"]
    return "\n".join(parts)
