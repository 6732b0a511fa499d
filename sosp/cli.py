"""The `sosp` command. Each subcommand reads files and writes files, so the workflow's rules are
one line each and any step can be run by hand. `sosp <command> --help` explains each; the
subcommands live in `sosp.commands`, listed by `sosp.commands.registry`."""

from __future__ import annotations

import argparse
import sys

from sosp.commands import registry
from sosp.errors import SospError


def parser() -> argparse.ArgumentParser:
    """The `sosp` parser, one subparser per registered command; parsed arguments carry the
    command's `run` as `args.run`."""
    top = argparse.ArgumentParser(
        prog="sosp",
        description="Second-order structured pruning (SOSP-I, SOSP-H) and its baselines.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in registry.COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run `sosp` with `argv` (default: the command line); returns the exit code, 2 with a
    one-line message for a user error."""
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except SospError as e:
        print(f"sosp {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
