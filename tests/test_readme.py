"""The README's commands work as written: every command of its fenced code blocks runs, in a
small variant where the written one needs a dataset or hours (digits for CIFAR-10, ResNet-20 for
ResNet-56, one epoch, N'=64, snakemake dry runs), and a command whose comment shows its output
prints that output. A README command that stops working fails here."""

import json
import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sosp import cli
from tests.workflow.test_workflow import snakemake

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def fenced_blocks(language: str) -> list[str]:
    """The README's ```language blocks, in order."""
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands(block: str) -> list[tuple[str, str]]:
    """(command, comment) per logical line of a shell block: continuation lines joined, the
    trailing `# comment` split off, `[optional]` arguments included without their brackets."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        command, _, comment = line.partition("#")
        command = re.sub(r"\[([^\]]*)\]", r"\1", command)
        if command.strip():
            out.append((" ".join(command.split()), comment.strip()))
    return out


def small(command: str, runs: Path) -> list[str]:
    """The arguments of a README `sosp` command (without `sosp`) as run here: digits and
    ResNet-20 where it names CIFAR-10 and ResNet-56 and reads or writes runs, one epoch, N'=64,
    runs/ under `runs`."""
    argv = shlex.split(command)
    reads_runs = any(a.startswith("runs/") for a in argv)
    if reads_runs:
        argv = [{"resnet56": "resnet20", "cifar10": "digits"}.get(a, a) for a in argv]
        argv = [str(runs / a[len("runs/") :]) if a.startswith("runs/") else a for a in argv]
    if argv[1] in ("train", "finetune"):
        argv += ["--set", "epochs=1", "--no-progress"]
    if argv[1] == "prune":
        argv += ["--n-samples", "64"]
    return argv[1:]


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, **kw)


def test_every_command_line_example_runs_and_prints_what_its_comment_shows(
    tmp_path, capsys, monkeypatch
):
    """`## Command line`'s block: models, models of a timm family, count, train, prune,
    finetune, evaluate, count of a mask, export, in order, each exit code 0 and each promised
    output file there; a comment holding JSON (count's params and MACs) equals the command's
    output. Run through `sosp.cli.main` in this process (the `sosp` script calls it; a
    subprocess each would add seconds of start-up per command)."""
    monkeypatch.chdir(REPO)
    block = next(b for b in fenced_blocks("bash") if "sosp train" in b)
    lines = commands(block)
    assert [c.split()[1] for c, _ in lines] == [
        "models", "models", "count", "train", "prune", "finetune", "evaluate", "count", "export",
    ]  # fmt: skip
    runs = tmp_path / "runs"
    for command, comment in lines:
        capsys.readouterr()
        code = cli.main(small(command, runs))
        out, err = capsys.readouterr()
        assert code == 0, f"{command}\n{err[-2000:]}"
        if comment.startswith("{"):
            assert json.loads(out) == json.loads(comment), command
    assert (runs / "r56/model.pt").exists() and (runs / "r56-sosp_i/0.5/mask.json").exists()
    assert (runs / "r56-sosp_i-ft/eval.json").exists()
    assert (runs / "r56-sosp_i/0.5/pruned.onnx").exists()


def test_library_example_runs_on_digits():
    """`## Library`'s block, switched to digits as its own comment says (ResNet-20 made for
    1x8x8 inputs, N'=64), prunes and returns every attribute it lists."""
    code = fenced_blocks("python")[0]
    swaps = {
        'models.create("resnet56", num_classes=10)': (
            'models.create("resnet20", 10, in_channels=1, image_size=8)'
        ),
        'data.load("cifar10",': 'data.load("digits",',
        "ratio=0.5,": "ratio=0.5, n_samples=64,",
    }
    for old, new in swaps.items():
        assert old in code, f"the README's library example no longer holds {old!r}"
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    r = scope["r"]
    assert r.mask and r.model is not None and r.order and r.scores and r.report["after"]


@pytest.mark.parametrize("which", ["workflow", "two commands"])
def test_workflow_commands_dry_run(tmp_path, which):
    """`## Workflow`'s block and `make demo`'s snakemake command, each as a dry run (`-n`): the
    DAG resolves with the profiles and options they name; the paper's DAG has the number of
    jobs its comment gives (the other paper lines run on the demo config, a tenth the DAG)."""
    if which == "workflow":
        block = next(b for b in fenced_blocks("bash") if "snakemake replot" in b)
        lines = commands(block)
    else:
        made = run(["make", "-n", "demo"])
        assert made.returncode == 0, made.stderr
        line = next(x for x in made.stdout.splitlines() if "snakemake" in x)
        lines = [(line[line.index("snakemake") :], "")]
    assert lines

    def dry_run(i: int, command: str, comment: str) -> None:
        jobs = re.search(r"(\d+) jobs", comment)
        if not jobs:  # the paper's DAG once, for its job count; the other lines on the demo's
            command = command.replace("config/paper.yaml", "config/demo.yaml")
        argv = shlex.split(command.replace("...", "config/demo.yaml"))
        argv = [a for a in argv if a != "-n"]
        r = snakemake(tmp_path / str(i), *argv[1:], "-n")  # a folder each: no shared lock
        assert r.returncode == 0, f"{command}\n{r.stderr[-2000:]}"
        if jobs:
            assert re.search(rf"^total\s+{jobs.group(1)}$", r.stdout, flags=re.M), r.stdout[-800:]

    # two dry runs at a time (each is seconds of single-threaded start-up), errors re-raised
    with ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(dry_run, i, *line) for i, line in enumerate(lines)]:
            done.result()
