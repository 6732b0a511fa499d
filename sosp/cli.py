"""The `sosp` command. Each subcommand reads files and writes files, so the workflow's rules are
one line each and any step can be run by hand. `sosp <command> --help` explains each; the
subcommands live in `sosp.commands`, listed by `sosp.commands.registry`. Only the command being
run is imported: `sosp --help` and `sosp --version` do not import torch."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sosp
from sosp.commands import registry
from sosp.errors import SospError
from sosp.signals import Stopped, deferred


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
    """Run `sosp` with `argv` (default: the command line); returns the exit code: 2 with a
    one-line message for a user error; 130 (143) with one line saying what was kept after
    Ctrl-C (SIGTERM), at any point, imports included."""
    argv = sys.argv[1:] if argv is None else argv
    only = [a for a in argv[:1] if a in registry.names()]
    with _stops_on_sigterm():
        try:
            with deferred():  # torch's import swallows an interrupt of numpy's
                command = parser(only=only)
            return _run(command.parse_args(argv))
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            how = "interrupted" if signum == signal.SIGINT else f"stopped by {signum.name}"
            print(f"{' '.join(['sosp', *only])}: {how}; {_kept()}", file=sys.stderr)
            _forget_interrupt_in_string_code()
            return 128 + signum
        finally:
            if io := _io():
                io.release_folders()


def _forget_interrupt_in_string_code() -> None:
    """Let `python -m sosp` exit with the code `main` returns after a caught Ctrl-C.

    CPython remembers a KeyboardInterrupt that ended code run from a string (`exec` of the
    functions dataclasses and namedtuples build, as they are imported) even when a caller caught
    it, and under `-m` then dies by SIGINT (exit -2) instead; the next string that runs to its
    end clears the mark."""
    exec("pass")


def _kept() -> str:
    """What an interrupted command leaves (`sosp.commands.base.what_was_kept`)."""
    folders = io.claimed_folders() if (io := _io()) else []
    if not folders:
        return "no file is half-written; re-run the same command"
    from sosp.commands.base import what_was_kept

    return what_was_kept(folders)


def _io():
    """`sosp.io` where it was imported whole, else None (then no folder was claimed): an
    interrupt may come while it imports torch."""
    io = sys.modules.get("sosp.io")
    return io if hasattr(io, "release_folders") else None


def _run(args: argparse.Namespace) -> int:
    """The command's exit code, its start-up checks first; a user error told in one line."""
    from sosp.commands.base import check_startup

    try:
        check_startup(args)
        return args.run(args)
    except SospError as e:
        print(f"sosp {args.command}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)


@contextmanager
def _stops_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises `Stopped` in this process (not in the workers it forks,
    which keep the default); `sosp.train.fit` turns it into a stop after the step meanwhile."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    ):
        yield
        return
    owner = os.getpid()

    def stop(signum: int, _frame) -> None:
        if os.getpid() != owner:  # a forked worker: die as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
