"""The `sosp` command as a user types it: one subcommand per registered command, and user
errors as one line on stderr with exit code 2."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import sosp
from sosp import cli
from sosp.commands import registry


def run_sosp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sosp", *args], capture_output=True, text=True)


def run_sosp_here(*args: str) -> subprocess.CompletedProcess:
    """`sosp ARGS` through `cli.main` in this process, as `run_sosp` would see it (exit code,
    stdout, stderr; an unexpected exception as exit code 1 with its traceback on stderr),
    without the seconds a new interpreter spends importing torch."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse: --help, --version, a bad option
            code = e.code if isinstance(e.code, int) else 2
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["sosp", *args], code, out.getvalue(), err.getvalue())


def test_unknown_model_is_a_message_not_a_traceback():
    """Bad input exits 2 with one line naming the problem."""
    r = run_sosp("count", "--model", "resnet57", "--json")
    assert r.returncode == 2
    assert "unknown model 'resnet57'" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_registered_command():
    """`sosp --help` shows each command of the registry with its help line, in its order."""
    r = run_sosp("--help")
    assert r.returncode == 0, r.stderr
    # a name at indent 4; a long name's help line wraps to a deeper indent below it
    shown = [line.split()[0] for line in r.stdout.splitlines() if re.match(r"    \S", line)]
    assert shown == registry.names()
    for entry in registry.ENTRIES:
        assert entry.help in r.stdout


@pytest.mark.parametrize("name", registry.names())
def test_every_command_help_renders(name):
    """`sosp NAME --help` prints its options and exits 0: every help text formats (a bare
    `%` in one stops argparse with a traceback)."""
    r = run_sosp_here(name, "--help")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "--" in r.stdout


def test_parser_dispatches_to_the_command_run():
    """Parsing `<name> ...` selects that command's `run`."""
    args = cli.parser().parse_args(["count", "--model", "resnet20", "--json"])
    assert args.run is registry.entry("count").load().run


def test_main_returns_exit_code_without_exiting(capsys):
    """`cli.main(argv)` runs in-process and returns the command's exit code."""
    assert cli.main(["count", "--model", "resnet20", "--dataset", "digits", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"params", "macs"}


def test_help_and_version_start_without_torch():
    """`sosp --help` and `sosp --version` import no command module and not torch (what makes
    them start in a fraction of a second); `sosp count --help` imports only count's."""
    code = (
        "import sys\n"
        "from sosp import cli\n"
        "try:\n"
        "    cli.main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('sosp.commands.')))"
    )
    for args, loaded in [
        (["--help"], ["sosp.commands.registry"]),
        (["--version"], ["sosp.commands.registry"]),
    ]:
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == repr(loaded), r.stdout
    r = subprocess.run(
        [sys.executable, "-c", code, "count", "--help"], capture_output=True, text=True
    )
    modules = eval(r.stdout.splitlines()[-1])
    assert "sosp.commands.count" in modules and "sosp.commands.train" not in modules


def test_version_names_the_installed_package():
    """`sosp --version` prints `sosp <version>` and exits 0."""
    r = run_sosp("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sosp {sosp.__version__}", r.stdout


def test_in_process_runner_reports_what_a_subprocess_does():
    """`run_sosp_here` gives the exit code and the one-line error of `run_sosp` for bad input,
    so tests that need only those can skip the interpreter start."""
    args = ("count", "--model", "resnet57", "--json")
    here, there = run_sosp_here(*args), run_sosp(*args)
    assert (here.returncode, here.stderr, here.stdout) == (there.returncode, there.stderr, "")


def test_interrupt_inside_string_code_still_exits_130(tmp_path):
    """`python -m sosp` returns 130 after Ctrl-C even where the interrupt ended code run from
    a string (a dataclass being built while torch's modules import), which CPython otherwise
    turns into death by SIGINT (-2) however the interrupt was handled."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import sys\n"
        "from sosp import cli\n"
        "from sosp.commands import base\n"
        "def stop(_args):\n"
        "    exec('raise KeyboardInterrupt')\n"
        "base.check_startup = stop\n"
        "sys.exit(cli.main(['count', '--model', 'resnet20']))\n"
    )
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-m", "interrupted_in_exec"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 130, r.stderr
    assert r.stderr.startswith("sosp count: interrupted; "), r.stderr
