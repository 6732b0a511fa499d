"""W&B runs a dashboard can group and filter: train, finetune, prune and evaluate each start one
run per network, named by what it is, with the command as job type and a config that holds the
same keys for every command. A stand-in `wandb` module records what the commands pass; nothing
here needs W&B or the network, except the one test of W&B's own refusal."""

import json
import sys
import types

import pytest
import torch

from sosp import cli, tracking
from tests.test_cli import run_sosp

KEYS = ("command", "model", "dataset", "method", "ratio", "seed", "budget", "params", "macs")
QUICK = ["--no-progress", "--set", "epochs=1"]
WANDB = ["--wandb", "offline", "--wandb-group", "g", "--wandb-tags", "demo", "fig1"]
TRAIN = ["train", "--model", "resnet20", "--dataset", "digits", *QUICK]
PRUNE = ["prune", "--model", "resnet20", "--dataset", "digits", "--n-samples", "32"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tests train in-process: one thread, as the subprocess tests run (two threads on
    a shared 2-core machine wait on each other: 1 s becomes 50 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StandInRun:
    def __init__(self, init: dict):
        self.init, self.logged, self.summary, self.finished = init, [], {}, False

    def log(self, metrics: dict, step: int) -> None:
        self.logged.append((step, metrics))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def runs(monkeypatch) -> list[StandInRun]:
    """A stand-in `wandb` module in sys.modules; the runs its `init` started, in order."""
    started: list[StandInRun] = []

    def init(**kwargs):
        started.append(StandInRun(kwargs))
        return started[-1]

    fake = types.ModuleType("wandb")
    fake.init = init
    fake.login = lambda **kwargs: True
    fake.errors = types.SimpleNamespace(UsageError=type("UsageError", (Exception,), {}))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return started


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A dense resnet20 trained 1 epoch on digits, pruned by sosp_h at 0.5 and fine-tuned 1
    epoch, without W&B."""
    root = tmp_path_factory.mktemp("chain")
    dense, pruned = root / "dense", root / "pruned"
    assert cli.main([*TRAIN, "--out", str(dense)]) == 0
    ratio = ["--method", "sosp_h", "--ratio", "0.5", "--out", str(pruned)]
    assert cli.main([*PRUNE, "--checkpoint", str(dense / "model.pt"), *ratio]) == 0
    assert cli.main(["finetune", "--pruned", str(pruned / "pruned.pt"), *QUICK,
                     "--out", str(root / "ft")]) == 0  # fmt: skip
    return root


def _commands(chain, out):
    """command -> (its arguments, the run name, the origin of its network: the keys the
    config takes from the prune report, or the dense ones)."""
    dense, pruned = str(chain / "dense" / "model.pt"), str(chain / "pruned" / "pruned.pt")
    sosp_h = {"method": "sosp_h", "ratio": 0.5, "budget": "structures", "prune_at": "trained"}
    return {
        "train": ([*TRAIN, "--out", out], "resnet20-digits dense s0 train", tracking.DENSE),
        "finetune": (
            ["finetune", "--pruned", pruned, *QUICK, "--out", out],
            "resnet20-digits sosp_h r0.5 s0 finetune",
            sosp_h,
        ),
        "prune": (
            [*PRUNE, "--checkpoint", dense, "--method", "sosp_h", "--ratio", "0.5", "--out", out],
            "resnet20-digits sosp_h r0.5 s0 prune",
            sosp_h,
        ),
        "evaluate": (
            ["evaluate", "--checkpoint", str(chain / "ft" / "model.pt"), "--out", out + ".json"],
            "resnet20-digits sosp_h r0.5 s0 evaluate",
            sosp_h,
        ),
    }


SUMMARY = {  # what each command's run holds as its summary (among others)
    "train": ("final_test_acc", "final_test_loss", "wall_seconds"),
    "finetune": ("final_test_acc", "final_test_loss", "wall_seconds"),
    "prune": ("before", "after", "params_removed", "seconds"),
    "evaluate": ("test_acc", "test_loss", "test_acc_before_finetune"),
}


@pytest.mark.parametrize("command", ["train", "finetune", "prune", "evaluate"])
def test_each_command_starts_one_named_run_with_the_dashboard_keys(chain, runs, tmp_path, command):
    """With --wandb on, each command starts exactly one W&B run for one network: job type the
    command, a name saying model, dataset, method, ratio, seed and command, the group and tags
    given, and a config holding model, dataset, method, ratio, seed, budget, params and MACs
    of that network (for finetune and evaluate, method, ratio and budget come from the prune
    report of the network they start from), then the command's own settings; its results are
    the summary, and the run is finished."""
    args, name, origin = _commands(chain, str(tmp_path / "out"))[command]
    assert cli.main([*args, *WANDB]) == 0
    assert len(runs) == 1
    (run,) = runs
    init, config = run.init, run.init["config"]
    assert (init["job_type"], init["name"], init["group"]) == (command, name, "g")
    assert init["tags"] == ["demo", "fig1"] and init["mode"] == "offline"
    assert list(config)[:3] == ["command", "model", "dataset"] and set(KEYS) <= set(config)
    assert {k: config[k] for k in origin} == origin
    assert (config["command"], config["model"], config["dataset"], config["seed"]) == (
        command, "resnet20", "digits", 0,
    )  # fmt: skip
    report = json.loads((chain / "pruned" / "report.json").read_text())
    counts = report["before" if command == "train" else "after"]
    assert (config["params"], config["macs"]) == (counts["params"], counts["macs"])
    assert set(SUMMARY[command]) <= set(run.summary) and run.finished
    if command in ("train", "finetune"):  # the command's own settings, and per-epoch rows
        assert config["recipe"]["epochs"] == 1 and [step for step, _ in run.logged] == [1]
    if command == "prune":
        assert config["n_samples"] == 32 and config["checkpoint"].endswith("model.pt")


def test_prune_starts_one_run_per_ratio(chain, runs, tmp_path):
    """Several ratios share one saliency computation but each pruned network is its own run,
    so a dashboard filters by ratio: names, ratios and params follow each ratio's report."""
    out = tmp_path / "p"
    dense = ["--checkpoint", str(chain / "dense" / "model.pt")]
    ratios = ["--method", "magnitude", "--ratio", "0.3", "0.6", "--out", str(out)]
    assert cli.main([*PRUNE, *dense, *ratios, *WANDB]) == 0
    assert [r.init["name"] for r in runs] == [
        "resnet20-digits magnitude r0.3 s0 prune",
        "resnet20-digits magnitude r0.6 s0 prune",
    ]
    for run, folder in zip(runs, ("0.3", "0.6"), strict=True):
        report = json.loads((out / folder / "report.json").read_text())
        assert run.init["config"]["ratio"] == report["ratio"]
        assert run.init["config"]["params"] == report["after"]["params"]
        assert run.init["dir"] == str(out / folder) and run.finished


def test_disabled_never_imports_wandb(chain, monkeypatch):
    """The default, --wandb disabled, does not import wandb at all."""
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert cli.main(["evaluate", "--checkpoint", str(chain / "dense" / "model.pt")]) == 0
    assert "wandb" not in sys.modules


def test_run_name_says_what_the_run_is():
    """Model-dataset, method, ratio, 'init' for pruning at initialization, seed, command; a dense
    network has no ratio; what is unknown is left out."""
    base = {"model": "resnet56", "dataset": "cifar10", "seed": 0, "command": "finetune"}
    pruned = {**base, "method": "sosp_h", "ratio": 0.5, "prune_at": "trained"}
    assert tracking.run_name(pruned) == "resnet56-cifar10 sosp_h r0.5 s0 finetune"
    at_init = {**pruned, "ratio": 0.3, "prune_at": "init", "seed": 2}
    assert tracking.run_name(at_init) == "resnet56-cifar10 sosp_h r0.3 init s2 finetune"
    dense = {**base, **tracking.DENSE, "command": "train"}
    assert tracking.run_name(dense) == "resnet56-cifar10 dense s0 train"
    unknown = {**base, "method": None, "ratio": None, "seed": None, "command": "evaluate"}
    assert tracking.run_name(unknown) == "resnet56-cifar10 evaluate"


def test_online_prune_without_a_login_stops_before_pruning(tmp_path, no_wandb_login):
    """prune and evaluate start their W&B runs once their results exist, so --wandb online with
    no API key or login is refused first: one line naming the fixes (exit 2), nothing written.
    (Real wandb, no network: the login is looked up locally.)"""
    out = tmp_path / "p"
    r = run_sosp("prune", "--model", "resnet20", "--dataset", "digits", "--ratio", "0.5",
                 "--wandb", "online", "--out", str(out))  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "wandb login" in r.stderr and "--wandb offline" in r.stderr
    assert not out.exists()
