"""The `sosp` commands under interruption, full disks, odd paths and concurrent runs: each ends
in one line saying what happened and what to do, leaves no half-written or temporary file, and
never replaces what is not a regular file. Real signals and processes where the property is
about them; a faked full disk where only the error matters."""

import errno
import fcntl
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from sosp import io
from sosp.errors import BadInput
from tests.test_cli import run_sosp_here as run_sosp

DIGITS = ["--model", "resnet20", "--dataset", "digits"]
TRAIN = ["train", *DIGITS, "--no-progress", "--device", "cpu"]
PRUNE = ["prune", *DIGITS, "--method", "magnitude", "--n-samples", "32", "--device", "cpu"]
LONG = ["--set", "epochs=500"]  # seconds per epoch on digits: a run to stop, never finished
# a prune of seconds, not a fraction of one: SOSP-I's Jacobians over every training sample, so
# a signal sent once it holds its --out arrives while it works, on an idle machine too
SLOW_PRUNE = ["prune", *DIGITS, "--method", "sosp_i", "--n-samples", "1437", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits resnet20 trained one epoch (dense/: last.pt, model.pt, metrics.json) and
    pruned by magnitude at 0.3 (pruned/: mask.json, pruned.pt, report.json, reports.json)."""
    root = tmp_path_factory.mktemp("run_safety")
    assert run_sosp(*TRAIN, "--set", "epochs=1", "--out", str(root / "dense")).returncode == 0
    dense = str(root / "dense" / "model.pt")
    r = run_sosp(*PRUNE, "--checkpoint", dense, "--ratio", "0.3", "--out", str(root / "pruned"))
    assert r.returncode == 0, r.stderr
    return root


def _start(*args: str, **kwargs) -> subprocess.Popen:
    """`sosp ARGS` in a new process, its output piped, with SIGINT's default disposition
    (so Python turns it into KeyboardInterrupt): a suite run as a background job of a shell
    without job control inherits SIGINT ignored, and a child that inherits it keeps it."""
    also = kwargs.pop("preexec_fn", None)

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if also is not None:
            also()

    return subprocess.Popen(
        [sys.executable, "-m", "sosp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
        **kwargs,
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` exists (the process got that far), failing if the process ends first."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files and lock files under `folder`: none may outlive a command."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == io.LOCK]


@contextmanager
def _held(folder: Path):
    """`folder` locked as another running command holds it (an flock of its own on the lock
    file, which conflicts even within this process)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / io.LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 4242 on elsewhere\n")
    try:
        yield
    finally:
        os.close(fd)


# -- Ctrl-C and SIGTERM -----------------------------------------------------------------------


def test_ctrl_c_during_train_keeps_the_last_epoch_and_a_rerun_resumes(tmp_path):
    """Ctrl-C once the first epoch is checkpointed: exit 130, one line naming last.pt and its
    epoch and saying to re-run; no temporary or lock file left; the same command resumes."""
    out = tmp_path / "t"
    command = [*TRAIN, *LONG, "--out", str(out)]
    first = _start(*command)
    _wait_for(out / "last.pt", first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    line = _one_line(err)
    assert line.startswith(f"sosp train: interrupted; {out}/last.pt holds epoch "), line
    assert line.endswith("re-run the same command to resume"), line
    assert _leftovers(out) == []
    epoch = torch.load(out / "last.pt", weights_only=True)["epoch"]
    again = _start(*command)
    seen = again.stdout.readline()  # the first line it prints
    again.send_signal(signal.SIGINT)
    again.communicate(timeout=120)
    assert seen.startswith(f"{out}: resuming after epoch {epoch} of 500"), seen
    assert again.returncode == 130


STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "stopped by SIGTERM")]


@pytest.mark.parametrize("signum, code, says", STOPS)
def test_stopping_prune_leaves_whole_files_or_none(run, tmp_path, signum, code, says):
    """Ctrl-C (SIGTERM) while prune works, once it holds its --out: exit 130 (143), one line
    saying what it wrote (whole files) or that it wrote nothing, and to re-run; every file
    there loads, no temporary or lock file is left."""
    out = tmp_path / "p"
    dense = str(run / "dense" / "model.pt")
    p = _start(
        *SLOW_PRUNE, "--checkpoint", dense, "--ratio", "0.3", "0.5", "0.7", "--out", str(out)
    )
    _wait_for(out / io.LOCK, p)
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    line = _one_line(err)
    assert line.startswith(f"sosp prune: {says}; "), line
    assert line.endswith("re-run the same command"), line
    assert f"nothing written to {out}" in line or f"in {out} (whole files)" in line, line
    files = [f for f in out.rglob("*") if f.is_file()] if out.exists() else []
    assert _leftovers(out) == [] if out.exists() else True
    for f in files:
        json.loads(f.read_text()) if f.suffix == ".json" else torch.load(f, weights_only=True)


# -- full disks and other refusals of the user's environment ---------------------------------


class _FullDisk:
    """A temporary file on a full disk: every write fails with ENOSPC."""

    def __init__(self, fd: int):
        self.file = os.fdopen(fd, "wb")

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_full_disk_is_one_line_and_keeps_the_earlier_files(run, tmp_path, monkeypatch):
    """A write the disk refuses (ENOSPC) ends prune in one line naming the file and the fix,
    exit 2; the files of the earlier run in that --out are untouched, no temporary file is
    left. A model file (torch.save) gives the same line as a JSON file."""
    out = tmp_path / "p"
    dense = str(run / "dense" / "model.pt")
    command = [*PRUNE, "--checkpoint", dense, "--ratio", "0.3", "--out", str(out)]
    assert run_sosp(*command).returncode == 0
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    monkeypatch.setattr(io, "_open_temp", _FullDisk)
    r = run_sosp(*command)
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert line == (
        f"sosp prune: error: cannot write {out}/mask.json (No space left on device); free "
        "space on that disk or choose another --out"
    )
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    assert _leftovers(out) == []
    with pytest.raises(BadInput, match="cannot write .*model.pt \\(No space left on device\\)"):
        io.atomic_save({"w": torch.zeros(1000)}, tmp_path / "model.pt")
    assert list(tmp_path.glob("*.tmp")) == []


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_real_refused_write_of_a_model_file_is_one_line(run, tmp_path):
    """A real write the kernel stops part-way (a file size limit, EFBIG), inside torch.save's
    writer, which turns it into a RuntimeError about file positions: one line naming the
    model file, exit 2, no temporary file; the mask written before it is whole."""
    out = tmp_path / "p"
    dense = str(run / "dense" / "model.pt")
    p = _start(*PRUNE, "--checkpoint", dense, "--ratio", "0.3", "--out", str(out),
               preexec_fn=_file_size_limit(64 * 1024))  # fmt: skip
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err
    line = _one_line(err)
    assert line.startswith(f"sosp prune: error: cannot write {out}/pruned.pt (File too large); ")
    assert _leftovers(out) == []
    assert json.loads((out / "mask.json").read_text())["mask"]


def test_a_file_name_near_the_limit_is_written(tmp_path):
    """A file name of 250 characters (the limit is 255) is written: its temporary name beside
    it must not exceed the limit."""
    path = tmp_path / ("a" * 245 + ".json")
    io.atomic_write_json(path, [1])
    assert json.loads(path.read_text()) == [1]


# -- paths that are not regular files ---------------------------------------------------------


def _special_paths(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    device = tmp_path / "device"
    device.symlink_to("/dev/null")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"FIFO (named pipe)": fifo, "character device": device, "folder": folder}


def test_atomic_writes_never_replace_what_is_not_a_regular_file(tmp_path):
    """A FIFO, a symbolic link to a device, a folder at the path: refused in one line naming
    what is there, left as it was, and no temporary file beside it."""
    for kind, path in _special_paths(tmp_path).items():
        stat_before = os.stat(path)
        says = re.escape(f"{path} exists and is a {kind}, not a regular file; sosp replaces")
        with pytest.raises(BadInput, match=says):
            io.atomic_write_json(path, {"a": 1})
        assert os.path.samestat(os.stat(path), stat_before)
    assert (tmp_path / "device").is_symlink()
    assert list(tmp_path.glob(".*.tmp")) == []


def test_evaluate_out_named_too_long_is_refused_before_work(run, tmp_path):
    """A file name over the limit (300 characters): one line, before evaluating."""
    out = tmp_path / ("n" * 300 + ".json")
    model = str(run / "dense" / "model.pt")
    r = run_sosp("evaluate", "--checkpoint", model, "--device", "cpu", "--out", str(out))
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "cannot be written (File name too long); choose another path" in _one_line(r.stderr)


def test_evaluate_out_that_is_a_fifo_is_refused_before_work(run, tmp_path):
    """`sosp evaluate --out FIFO` stops before evaluating, in one line, the FIFO kept."""
    fifo = _special_paths(tmp_path)["FIFO (named pipe)"]
    model = str(run / "dense" / "model.pt")
    r = run_sosp("evaluate", "--checkpoint", model, "--device", "cpu", "--out", str(fifo))
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert f"{fifo} exists and is a FIFO (named pipe)" in _one_line(r.stderr)
    assert fifo.is_fifo()


# -- one command at a time per run folder -----------------------------------------------------


def test_a_second_train_into_the_same_out_stops_at_once(tmp_path):
    """While one `sosp train` writes --out, another into it stops in one line naming the
    folder, the holder and the fix, writing nothing; once the first is killed (SIGKILL: no
    clean-up) the folder can be claimed again."""
    out = tmp_path / "t"
    first = _start(*TRAIN, *LONG, "--out", str(out))
    try:
        _wait_for(out / "last.pt", first)
        r = run_sosp(*TRAIN, "--set", "epochs=1", "--out", str(out))  # stops at once, or not
        assert r.returncode == 2, r.stderr
        assert _one_line(r.stderr) == (
            f"sosp train: error: --out {out} is being written by another sosp command "
            f"(pid {first.pid} on {os.uname().nodename}); wait for it to finish, or choose "
            "another --out"
        )
    finally:
        first.kill()
        first.communicate()
    io.claim_folder(out)
    io.release_folders()
    assert _leftovers(out) == []


def _commands(run: Path, out: Path) -> dict[str, list[str]]:
    """Every command that writes a run folder, writing `out`."""
    model, pruned = run / "dense" / "model.pt", run / "pruned" / "pruned.pt"
    sha = subprocess.run(["sha256sum", str(model)], capture_output=True, text=True).stdout[:64]
    return {
        "train": [*TRAIN, "--set", "epochs=1", "--out", str(out)],
        "finetune": ["finetune", "--pruned", str(pruned), "--set", "epochs=1", "--out", str(out)],
        "prune": [*PRUNE, "--checkpoint", str(model), "--ratio", "0.3", "--out", str(out)],
        "retrain": [
            "retrain",
            "--checkpoint",
            str(model),
            "--sparsity",
            "0.5",
            "--budget",
            "1",
            "--out",
            str(out),
        ],  # fmt: skip
        "import": ["import", *DIGITS, "--weights", str(model), "--sha256", sha, "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["train", "finetune", "prune", "retrain", "import"])
def test_every_command_writing_a_run_folder_refuses_a_held_one(run, tmp_path, command):
    """train, finetune, prune, retrain and import stop in one line when another command holds
    their run folder, and write nothing into it."""
    out = tmp_path / "out"
    with _held(out):
        r = run_sosp(*_commands(run, out)[command])
        assert r.returncode == 2, r.stderr
        assert "is being written by another sosp command (pid 4242 on elsewhere)" in r.stderr
        assert _one_line(r.stderr)
        assert [p.name for p in out.iterdir()] == [io.LOCK]


def test_a_refused_command_removes_the_folder_it_claimed(run, tmp_path):
    """A user error after the claim (here an unknown recipe key) leaves no run folder behind:
    the claim removes what it created."""
    out = tmp_path / "a" / "t"
    r = run_sosp(*TRAIN, "--set", "no_such_key=1", "--out", str(out))
    assert r.returncode == 2 and "no_such_key" in r.stderr, r.stderr
    assert not (tmp_path / "a").exists()


# -- W&B and other start-up checks ------------------------------------------------------------


def test_online_train_without_a_login_stops_before_any_work(tmp_path, no_wandb_login):
    """`sosp train --wandb online` without an API key stops before loading data or creating
    its run folder: one line naming the fixes, exit 2."""
    out = tmp_path / "t"
    r = run_sosp(*TRAIN, "--wandb", "online", "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "wandb login" in _one_line(r.stderr)
    assert not out.exists()


def test_a_wandb_failure_after_pruning_loses_no_file(run, tmp_path, no_wandb_login, monkeypatch):
    """Where W&B fails only when its run starts (a key is set, the network is down), prune has
    written every file, reports.json included, and says so in one line, exit 2."""
    wandb = pytest.importorskip("wandb")

    def unreachable(*args, **kwargs):
        raise wandb.errors.CommError("Network error (ConnectionError), entering retry loop")

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb, "init", unreachable)
    out = tmp_path / "p"
    dense = str(run / "dense" / "model.pt")
    r = run_sosp(*PRUNE, "--checkpoint", dense, "--ratio", "0.3", "--wandb", "online",
                 "--out", str(out))  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "W&B refused to start (Network error" in _one_line(r.stderr)
    names = {"mask.json", "pruned.pt", "report.json", "reports.json"}
    assert {p.name for p in out.iterdir()} == names


# -- a folder or a pruned network where a file or dense weights belong -----------------------


@pytest.mark.parametrize(
    "args, says",
    [
        (["count", *DIGITS, "--mask", "{run}/pruned"],
         "{run}/pruned is a folder, not a mask file; pass the mask.json inside it "
         "({run}/pruned/mask.json)"),
        (["evaluate", "--checkpoint", "{run}/dense"],
         "{run}/dense is a folder, not a model file; pass the model.pt inside it "
         "({run}/dense/model.pt)"),
        (["evaluate", "--checkpoint", "{run}"],
         "{run} is a folder, not a model file; pass the dense/model.pt inside it "
         "({run}/dense/model.pt)"),
        (["bottlenecks", "--mask", "{run}/dense", "--out", "{run}/w.json"],
         "{run}/dense is a folder, not a mask file; it holds no mask.json: pass the mask file "
         "itself"),
        ([*PRUNE, "--checkpoint", "{run}/dense", "--ratio", "0.3", "--out", "{run}/p"],
         "{run}/dense is a folder, not a checkpoint file; pass the model.pt inside it "
         "({run}/dense/model.pt)"),
    ],
)  # fmt: skip
def test_a_folder_passed_for_a_file_names_the_file_inside(run, args, says):
    """A folder where a mask or model file belongs: one line naming the file to pass."""
    r = run_sosp(*(a.format(run=run) for a in args))
    assert r.returncode == 2, r.stderr
    assert says.format(run=run) in _one_line(r.stderr)


def test_pruning_a_pruned_network_names_the_dense_one(run, tmp_path):
    """A pruned.pt passed to prune: one line saying it is already pruned and to prune the
    dense file it came from at the total ratio, or to fine-tune it; nothing written."""
    pruned, out = run / "pruned" / "pruned.pt", tmp_path / "p"
    r = run_sosp(*PRUNE, "--checkpoint", str(pruned), "--ratio", "0.5", "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert _one_line(r.stderr) == (
        f"sosp prune: error: checkpoint {pruned} holds an already pruned resnet20, not dense "
        f"weights, and a pruned network is not pruned again: prune {run}/dense/model.pt at "
        f"the total --ratio you want (this one was pruned at 0.3), or fine-tune this one with "
        f"`sosp finetune --pruned {pruned}`"
    )
    assert not out.exists()
