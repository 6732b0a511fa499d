"""The `sosp` command. Each subcommand reads files and writes files, so the workflow's rules are
one line each and any step can be run by hand. `sosp <command> --help` explains each; the
subcommands live in `sosp.commands`, listed by `sosp.commands.registry`. Only the command being
run is imported: `sosp --help` and `sosp --version` do not import torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import sosp
from sosp.commands import registry
from sosp.errors import SospError


def parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `sosp` parser, one subparser per registered command; parsed arguments carry the
    command's `run` as `args.run`. `only`: the commands whose modules are imported and whose
    options are declared (default: all); the others are listed by name and help alone."""
    top = argparse.ArgumentParser(
        prog="sosp",
        description="Second-order structured pruning (SOSP-I, SOSP-H) and its baselines.",
    )
    top.add_argument("--version", action="version", version=f"sosp {sosp.__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in registry.ENTRIES:
        p = sub.add_parser(entry.name, help=entry.help, description=entry.help)
        if only is None or entry.name in only:
            command = entry.load()
            command.add_arguments(p)
            p.set_defaults(run=command.run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run `sosp` with `argv` (default: the command line); returns the exit code, 2 with a
    one-line message for a user error."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser(only=[a for a in argv[:1] if a in registry.names()]).parse_args(argv)
    try:
        return args.run(args)
    except SospError as e:
        print(f"sosp {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
