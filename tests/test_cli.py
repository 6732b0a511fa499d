"""The `sosp` command as a user types it: one subcommand per registered command, and user
errors as one line on stderr with exit code 2."""

import json
import subprocess
import sys

from sosp import cli
from sosp.commands import registry


def run_sosp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sosp", *args], capture_output=True, text=True)


def test_unknown_model_is_a_message_not_a_traceback():
    """Bad input exits 2 with one line naming the problem."""
    r = run_sosp("count", "--model", "resnet57", "--json")
    assert r.returncode == 2
    assert "unknown model 'resnet57'" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_registered_command():
    """`sosp --help` shows each command of the registry with its help line, in its order."""
    r = run_sosp("--help")
    assert r.returncode == 0, r.stderr
    shown = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ")]
    assert shown == registry.names()
    for command in registry.COMMANDS:
        assert command.help in r.stdout


def test_parser_dispatches_to_the_command_run():
    """Parsing `<name> ...` selects that command's `run`."""
    args = cli.parser().parse_args(["count", "--model", "resnet20", "--json"])
    assert args.run is registry.COMMANDS[registry.names().index("count")].run


def test_main_returns_exit_code_without_exiting(capsys):
    """`cli.main(argv)` runs in-process and returns the command's exit code."""
    assert cli.main(["count", "--model", "resnet20", "--dataset", "digits", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"params", "macs"}
