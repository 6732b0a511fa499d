"""The README and every docs page work as written: each fenced code block runs, page by page,
in a fresh folder, in a small variant where the written one needs a dataset or hours:
- `sosp` lines run in this process (digits and ResNet-20 where a line reads runs/ made on CIFAR
  and ResNet-56, one epoch, N'=64); a `# {json}` comment must equal the output;
- `snakemake` lines run as dry runs (`-n`) of the Snakefile; the paper's DAG once per job
  count a comment promises, every other line on the demo config;
- `make` lines as `make -n`; `python benchmarks/*.py` lines parse their options;
  `bash benchmarks/gpu_check.sh` is checked by `bash -n`; `mkdir`, `export` and `curl -o`
  (its file made empty: nothing is downloaded here) set up the folder;
- python blocks are executed, yaml blocks are dry-run as configs.
The generated pages' parts are checked at their source: the speed tables' commands parse, and
every benchmark CSV has its table."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from docs.generators import speed
from sosp import cli
from tests.workflow.test_workflow import snakemake

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SKIPPED_LANGUAGES = {"text"}  # output shown, not run
SMALL_NETWORK = {"resnet56": "resnet20", "cifar10": "digits"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of a Markdown text, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[tuple[str, str]]:
    """(command, comment) per logical line of a shell block: continuation lines joined, the
    trailing `# comment` split off, `[optional]` arguments included without their brackets."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        command, _, comment = line.partition(" #")
        if line.lstrip().startswith("#"):
            continue
        command = re.sub(r"\[([^\]]*)\]", r"\1", command)
        if command.strip():
            out.append((" ".join(command.split()), comment.strip()))
    return out


def small_sosp(argv: list[str]) -> list[str]:
    """A `sosp` command line (without `sosp`) as run here: on digits and ResNet-20 where it
    reads or writes runs/, one epoch (two where the line sets more, e.g. for GMP's two
    intervals), N'=64."""
    if any(a.startswith("runs/") for a in argv):
        argv = [SMALL_NETWORK.get(a, a) for a in argv]
    epochs = lambda a: f"epochs={min(int(a[7:]), 2)}" if a.startswith("epochs=") else a  # noqa: E731
    argv = [epochs(a) for a in argv]
    if argv[0] in ("train", "finetune") and not any(a.startswith("epochs=") for a in argv):
        argv += ["--set", "epochs=1"]
    if argv[0] in ("train", "finetune"):
        argv += ["--no-progress"]
    if argv[0] == "prune":
        argv += ["--n-samples", "64"]
    return argv


class Parsed(Exception):
    """Raised by the patched `parse_args`: the options parsed, nothing run."""


def parse_benchmark(script: str, args: list[str], monkeypatch) -> None:
    """Parse a benchmark's options with its own parser, without running it: exit code 2 (an
    unknown or malformed option) fails the test."""
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    with pytest.raises(Parsed):
        runpy.run_path(str(REPO / script), run_name="__main__")


class Page:
    """Runs one page's blocks in order in `folder`, whose state (runs/, exported variables,
    files) carries from one block to the next, as for a reader going down the page."""

    def __init__(self, path: Path, folder: Path, capsys, monkeypatch):
        self.path, self.folder, self.capsys, self.monkeypatch = path, folder, capsys, monkeypatch
        self.env: dict[str, str] = {}
        self.scope: dict = {}  # the python blocks' names, shared down the page
        self.dry_runs = 0

    def run(self) -> int:
        """Run every block; returns how many commands and blocks ran."""
        count = 0
        for language, body in fenced_blocks(self.path.read_text()):
            if language in SKIPPED_LANGUAGES:
                continue
            runner = getattr(self, f"block_{language}", None)
            assert runner, f"{self.path.name}: no way to run a ```{language} block"
            count += runner(body)
        return count

    def block_bash(self, body: str) -> int:
        lines = commands(body)
        for command, comment in lines:
            argv = shlex.split(command)
            getattr(self, f"line_{argv[0]}", self.unknown)(argv, comment)
        return len(lines)

    def block_python(self, body: str) -> int:
        self.monkeypatch.chdir(self.folder)
        exec(compile(body, str(self.path), "exec"), self.scope)
        return 1

    def block_yaml(self, body: str) -> int:
        config = self.folder / f"block{self.dry_runs}.yaml"
        config.write_text(body)
        self.dry_run(["--configfile", str(config)])
        return 1

    def unknown(self, argv: list[str], comment: str) -> None:
        raise AssertionError(f"{self.path.name}: no way to run {argv[0]!r} ({' '.join(argv)})")

    def line_sosp(self, argv: list[str], comment: str) -> None:
        self.monkeypatch.chdir(self.folder)
        self.capsys.readouterr()
        code = cli.main(small_sosp(argv[1:]))
        out, err = self.capsys.readouterr()
        assert code == 0, f"{' '.join(argv)}\n{err[-2000:]}"
        if comment.startswith("{"):
            assert json.loads(out) == json.loads(comment), " ".join(argv)

    def line_snakemake(self, argv: list[str], comment: str) -> None:
        jobs = re.search(r"(\d+) jobs", comment)
        args = [a.replace("...", "config/demo.yaml") for a in argv[1:] if a != "-n"]
        if not jobs:  # the paper's DAG once, for its job count; the other lines on the demo's
            args = [a.replace("config/paper.yaml", "config/demo.yaml") for a in args]
        r = self.dry_run(args)
        if jobs:
            assert re.search(rf"^total\s+{jobs.group(1)}$", r.stdout, flags=re.M), r.stdout[-800:]

    def dry_run(self, args: list[str]) -> subprocess.CompletedProcess:
        """`snakemake -n ARGS` in a folder of its own (no shared lock) with this page's
        variables; config files named relative to the repository, as a reader's clone has."""
        workdir = self.folder / f"dry{self.dry_runs}"
        self.dry_runs += 1
        workdir.mkdir()
        for name in ("weights",):  # what the page's set-up lines made
            if (self.folder / name).exists():
                (workdir / name).symlink_to(self.folder / name)
        args = [str(REPO / a) if a.startswith("config/") else a for a in args]
        r = snakemake(workdir, *args, "-n", env=self.env)
        assert r.returncode == 0, f"snakemake {' '.join(args)}\n{r.stderr[-2000:]}"
        return r

    def line_make(self, argv: list[str], comment: str) -> None:
        r = subprocess.run(["make", "-n", *argv[1:]], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0, r.stderr

    def line_python(self, argv: list[str], comment: str) -> None:
        assert argv[1].startswith("benchmarks/"), " ".join(argv)
        parse_benchmark(argv[1], argv[2:], self.monkeypatch)

    def line_bash(self, argv: list[str], comment: str) -> None:
        check_gpu_check(argv)

    def line_mkdir(self, argv: list[str], comment: str) -> None:
        for name in argv[1:]:
            if not name.startswith("-"):
                (self.folder / name).mkdir(parents=True, exist_ok=True)

    def line_export(self, argv: list[str], comment: str) -> None:
        for assignment in argv[1:]:
            name, _, value = assignment.partition("=")
            self.env[name] = value

    def line_curl(self, argv: list[str], comment: str) -> None:
        target = self.folder / argv[argv.index("-o") + 1]
        assert target.parent.is_dir(), f"curl -o {target}: its folder is not made first"
        target.write_bytes(b"")


def check_gpu_check(argv: list[str], comment: str = "") -> None:
    """`bash benchmarks/gpu_check.sh ...`: the script parses, and a step the comment names
    exists in it."""
    assert argv[1] == "benchmarks/gpu_check.sh", " ".join(argv)
    r = subprocess.run(["bash", "-n", argv[1]], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    script = (REPO / argv[1]).read_text()
    for step in re.findall(r"steps? ([a-z_]+(?:\([a-z_]+\))?)", comment):
        for name in {step.replace("(", "").replace(")", ""), re.sub(r"\(.*\)", "", step)}:
            assert re.search(rf"step {name} \d+", script), f"gpu_check.sh has no step {name}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_code_block_of_the_page_runs(path, tmp_path, capsys, monkeypatch):
    """Each fenced block of the page, in order, runs as the module docstring says; a page's
    state carries down the page. A command that stops working fails here."""
    Page(path, tmp_path, capsys, monkeypatch).run()


def test_readme_is_an_entrance():
    """The README stays short (at most 200 lines) and links only to files that exist."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        if not link.startswith("http"):
            assert (REPO / link).exists(), link


@pytest.mark.parametrize("name", sorted(speed.TABLES))
def test_speed_table_commands_parse(name, monkeypatch):
    """Each speed table's command is one the benchmark scripts accept: a python script's
    options parse with its own parser; a gpu_check.sh step it names exists."""
    command, _, comment = speed.TABLES[name].command.partition("#")
    argv = shlex.split(command)
    if argv[0] == "bash":
        check_gpu_check(argv, comment)
    else:
        parse_benchmark(argv[1], argv[2:], monkeypatch)


def test_every_benchmark_csv_has_a_speed_table_on_the_speed_page():
    """No CSV in results/benchmarks/ goes unshown, and every table is placed on the page."""
    assert speed.unlisted() == []
    page = (REPO / "docs/guide/speed.md").read_text()
    for name in speed.TABLES:
        assert f"<!-- generate speed {name} -->" in page, name


def test_make_demo_is_the_documented_snakemake_command():
    """`make demo` runs snakemake on the default config (config/demo.yaml), as a dry run."""
    made = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=REPO)
    assert made.returncode == 0 and "snakemake" in made.stdout, made.stderr
