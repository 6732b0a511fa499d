"""Training: schedules, recipes, exact resume after SIGTERM, corrupt checkpoints, W&B offline,
and the train -> prune -> finetune -> evaluate chain on the embedded digits."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from sosp import data, loaders, models, recipes, train
from sosp.errors import BadInput, UnknownName
from sosp.recipes import Recipe
from sosp.train import Preempted, add_bn_l1_grad, epoch_line, fit, lr_at
from tests.test_cli import run_sosp, run_sosp_here

QUICK = ["--dataset", "digits", "--no-progress", "--set", "epochs=3"]


def sosp_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sosp", *args]


def state(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_step_schedule_divides_at_milestones():
    r = recipes.PRESETS["cifar"]
    assert [lr_at(r, e) for e in (0, 119, 120, 159, 160, 199)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )


def test_cosine_schedule_starts_at_lr_and_decays():
    r = recipes.PRESETS["imagenet"]
    lrs = [lr_at(r, e) for e in range(r.epochs)]
    assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 1e-3


def test_presets_hold_the_paper_recipes():
    assert recipes.PRESETS["densenet"].milestones == (150, 225)
    assert recipes.PRESETS["densenet"].epochs == 300
    ft = recipes.PRESETS["c_obd_finetune"]
    assert (ft.lr, ft.epochs, ft.milestones) == (1e-3, 150, (75, 112))
    assert recipes.PRESETS["imagenet"].batch_size == 256


def test_overrides_are_typed_and_unknown_keys_named(tmp_path):
    r = recipes.resolve("cifar", {"epochs": "7", "milestones": "3,5", "nesterov": "true"})
    assert (r.epochs, r.milestones, r.nesterov, r.lr) == (7, (3, 5), True, 0.1)
    f = tmp_path / "r.yaml"
    f.write_text("lr: 0.02\nepochs: 9\n")
    assert recipes.resolve("cifar", {"epochs": 4}, f) == Recipe(lr=0.02, epochs=4, name="cifar")
    with pytest.raises(BadInput, match="'lrate'"):
        recipes.resolve("cifar", {"lrate": 1})
    with pytest.raises(BadInput, match="'epochs'"):
        recipes.resolve("cifar", {"epochs": "many"})
    with pytest.raises(UnknownName, match="known recipes"):
        recipes.resolve("cifar10")


def test_bn_l1_adds_the_sign_of_gamma():
    """Slimming's penalty: grad(gamma) += strength * sign(gamma), other grads untouched."""
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
    bn.weight.grad, bn.bias.grad = torch.zeros(3), torch.zeros(3)
    add_bn_l1_grad(torch.nn.Sequential(bn), 1e-4)
    assert torch.equal(bn.weight.grad, torch.tensor([1e-4, -1e-4, 1e-4]))
    assert torch.equal(bn.bias.grad, torch.zeros(3))


def test_resume_after_sigterm_reaches_the_same_weights(tmp_path):
    """A run stopped by SIGTERM after its first checkpoint exits non-zero; the same command
    then resumes and ends with weights identical to an uninterrupted run."""
    args = ["train", "--model", "resnet20", "--dataset", "digits", "--no-progress"]
    args += ["--set", "epochs=4", "batch_size=32"]
    whole = run_sosp(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "stopped"
    proc = subprocess.Popen(sosp_cmd(*args, "--out", str(out)), stderr=subprocess.PIPE, text=True)
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "re-run the same command to resume" in err
    assert not (out / "model.pt").exists()

    resumed = run_sosp(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    a, b = state(tmp_path / "whole" / "model.pt"), state(out / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m1 = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m2 = json.loads((out / "metrics.json").read_text())
    assert [e["train_loss"] for e in m1["epochs"]] == [e["train_loss"] for e in m2["epochs"]]


METRICS_KEYS = [
    "finished", "final_test_acc", "final_test_loss", "best_test_acc_selected_on_test",
    "epochs_done", "epochs_total", "epochs", "wall_seconds", "device", "seed", "versions", "config",
]  # fmt: skip


def test_finished_run_is_not_repeated(tmp_path):
    """A finished run (metrics.json with its keys, model.pt) is not trained again. Its log
    (--no-progress) holds one line per epoch."""
    out = tmp_path / "run"
    first = run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert [line.split()[1] for line in _epoch_lines(first.stdout)] == ["1/3", "2/3", "3/3"]
    assert list(json.loads((out / "metrics.json").read_text())) == METRICS_KEYS
    stamp = (out / "model.pt").stat().st_mtime_ns
    again = run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(out))
    assert again.returncode == 0 and "finished earlier" in again.stdout
    assert (out / "model.pt").stat().st_mtime_ns == stamp


def test_truncated_checkpoint_is_reported_and_kept(tmp_path):
    """A truncated last.pt stops the run with 'corrupt or truncated'; the file is untouched."""
    out = tmp_path / "run"
    r = run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(out))
    assert r.returncode == 0, r.stderr
    (out / "metrics.json").unlink()
    blob = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(blob[: len(blob) // 2])
    r = run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(out))
    assert r.returncode == 2
    assert "corrupt or truncated" in r.stderr and "Traceback" not in r.stderr
    assert (out / "last.pt").read_bytes() == blob[: len(blob) // 2]


def test_checkpoint_of_another_config_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(out)).returncode == 0
    (out / "metrics.json").unlink()
    r = run_sosp_here("train", "--model", "resnet20", *QUICK, "lr=0.3", "--out", str(out))
    assert r.returncode == 2 and "different run configuration" in r.stderr


def test_offline_wandb_writes_under_the_run_folder(tmp_path, monkeypatch):
    """--wandb offline keeps W&B's run files inside the run folder, with no network."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    r = run_sosp("train", "--model", "resnet20", *QUICK, "--wandb", "offline", "--out", str(out))
    assert r.returncode == 0, r.stderr
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_online_wandb_without_a_login_is_one_line(tmp_path, no_wandb_login):
    """--wandb online with no API key and no login stops before training with one line naming
    the fixes (exit 2), not W&B's UsageError traceback."""
    out = tmp_path / "run"
    r = run_sosp("train", "--model", "resnet20", *QUICK, "--wandb", "online", "--out", str(out))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "wandb login" in r.stderr and "--wandb offline" in r.stderr
    assert not (out / "last.pt").exists() and not (out / "metrics.json").exists()


def test_train_prune_finetune_evaluate_chain(tmp_path):
    """Dense training, pruning the trained model, fine-tuning the smaller network and
    evaluating it; evaluate's counts are the pruned architecture's."""
    dense = tmp_path / "dense"
    r = run_sosp_here("train", "--model", "resnet20", *QUICK, "--out", str(dense))
    assert r.returncode == 0, r.stderr
    pruned = tmp_path / "pruned"
    r = run_sosp_here(
        "prune", "--model", "resnet20", "--dataset", "digits", "--checkpoint",
        str(dense / "model.pt"), "--method", "sosp_h", "--ratio", "0.5", "--n-samples", "64",
        "--exclude", "resnet_downsample", "--out", str(pruned),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ft = tmp_path / "ft"
    source = str(pruned / "pruned.pt")
    r = run_sosp_here("finetune", "--pruned", source, *QUICK[2:], "--out", str(ft))
    assert r.returncode == 0, r.stderr
    r = run_sosp_here("evaluate", "--checkpoint", str(ft / "model.pt"), "--record", "method=sosp_h",
                 "--out", str(ft / "eval.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    (ev,) = json.loads((ft / "eval.json").read_text())
    report = json.loads((pruned / "report.json").read_text())
    assert ev["params"] == report["after"]["params"] and ev["method"] == "sosp_h"
    assert ev["prune"]["ratio"] == 0.5 and 0 <= ev["test_acc_before_finetune"] <= 1
    mask = json.loads((pruned / "mask.json").read_text())["mask"]
    resnet20 = models.create("resnet20", 10, 1, 8)  # digits: 10 classes, 1 x 8 x 8
    layers = {n: m for n, m in resnet20.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    expected = {n: len(mask.get(n, [])) / m.weight.shape[0] for n, m in layers.items()}
    assert list(ev["layer_pruned_fraction"].items()) == list(expected.items())  # network order
    metrics = json.loads((ft / "metrics.json").read_text())
    assert ev["test_acc"] == pytest.approx(metrics["final_test_acc"])
    assert metrics["config"]["command"] == "finetune" and metrics["config"]["recipe"]["epochs"] == 3


def test_digits_resnet20_reaches_95_percent(tmp_path):
    """The default digits recipe (30 epochs) trains resnet20 to >= 95% test accuracy."""
    out = tmp_path / "run"
    r = run_sosp_here("train", "--model", "resnet20", "--dataset", "digits", "--no-progress",
                 "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_test_acc"] >= 0.95
    assert metrics["config"]["recipe"]["name"] == "digits"


def test_torchrun_two_processes(tmp_path):
    """DDP through torchrun (gloo on the CPU): two ranks train one model, rank 0 writes it."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "sosp"]
    cmd += ["train", "--model", "resnet20", *QUICK, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == 2 and metrics["final_test_acc"] > 0.5


def _torchrun(*args: str) -> list[str]:
    """`sosp ARGS` under torchrun with 2 processes (gloo on the CPU), its own rendezvous port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return cmd + ["-m", "sosp", *args]


def test_torchrun_run_stopped_by_sigterm_resumes_to_the_same_weights(tmp_path):
    """Under torchrun a run stopped by SIGTERM (SLURM signals every process of the job) after
    its first checkpoint leaves no model file; the same command resumes on both ranks and ends
    with the weights of an uninterrupted 2-process run (a ResNet-20 at half width, 3 epochs:
    the resume, not the network, is under test)."""
    args = ["train", "--model", "resnet20", "--widths", "*=0.5", "--dataset", "digits"]
    args += ["--no-progress", "--set", "epochs=3", "batch_size=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(
        _torchrun(*args, "--out", str(tmp_path / "whole")), capture_output=True, text=True, env=env
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "stopped"
    proc = subprocess.Popen(
        _torchrun(*args, "--out", str(out)), stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the agent and both ranks, as SLURM does
    proc.communicate(timeout=120)
    assert proc.returncode != 0 and not (out / "model.pt").exists()
    resumed = subprocess.run(
        _torchrun(*args, "--out", str(out)), capture_output=True, text=True, env=env
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stdout
    a, b = state(tmp_path / "whole" / "model.pt"), state(out / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cycles_restart_the_schedule():
    r = recipes.resolve("cifar", {"cycles": 2})
    assert r.total_epochs == 400
    assert lr_at(r, 200) == pytest.approx(0.1) and lr_at(r, 399) == pytest.approx(0.001)


def test_epoch_line_names_test_accuracy_only_for_tested_epochs():
    """The per-epoch line carries epoch k/n, loss, accuracy, lr, images/s and ETA, and the test
    accuracy only where the row has one."""
    row = {"epoch": 3, "lr": 0.1, "train_loss": 1.2344, "train_acc": 0.5671}
    line = epoch_line(row, 30, 1234.4, 250)
    assert line == "epoch 3/30  loss 1.234  acc 56.7%  lr 0.1  1,234 img/s  ETA 4m10s"
    tested = epoch_line({**row, "test_loss": 1.0, "test_acc": 0.551}, 30, 50, 3725)
    assert "acc 56.7%  test acc 55.1%  lr 0.1" in tested and tested.endswith("ETA 1h02m")


def _epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def test_one_line_per_epoch_is_printed_without_the_bar(tmp_path, capsys):
    """With the bar off, `fit` prints exactly one line per epoch, in order, as each ends, with
    the test accuracy on the tested epochs only (test_every=2 of 4: epochs 2 and 4)."""
    _tiny_digits_run(tmp_path / "run")
    lines = _epoch_lines(capsys.readouterr().out)
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert ["test acc" in line for line in lines] == [False, True, False, True]
    assert all(" img/s  ETA " in line for line in lines)


def _tiny_digits_run(out, logger=None) -> dict:
    """`fit` of a one-conv network on 256 digits for 4 epochs (tested every 2 on 128), into
    `out`: a run in a fraction of a second."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    recipe = Recipe(epochs=4, batch_size=128, lr=0.1, schedule="constant", milestones=(),
                    augment=False, test_every=2)  # fmt: skip
    meta = data.info("digits")
    batches = {}
    for split in ("train", "test"):
        x, y = data.tensors("digits", split)
        n = 256 if split == "train" else 128
        batches[split] = loaders.TensorLoader(
            x[:n], y[:n], meta, 128, shuffle=split == "train", augment=False, seed=0
        )
    return fit(
        net, recipe, batches["train"], batches["test"], out, config={"recipe": recipe.as_dict()},
        architecture={"model": "tiny", "dataset": "digits"}, logger=logger, progress=False,
    )  # fmt: skip


class _StopAfter:
    """A logger that sends this process SIGTERM once epoch `epoch` is logged, as a scheduler
    that preempts the job would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def log(self, row: dict, step: int) -> None:
        if step == self.epoch:
            signal.raise_signal(signal.SIGTERM)


def test_metrics_say_how_far_a_stopped_run_got_and_resume_ends_the_same(tmp_path):
    """metrics.json of a run stopped after epoch 2 of 4 holds those 2 epochs with
    "finished": false; the resumed run ends with "finished": true and the same metrics as an
    uninterrupted run, apart from the wall time."""
    stopped = tmp_path / "stopped"
    with pytest.raises(Preempted):
        _tiny_digits_run(stopped, logger=_StopAfter(2))
    partial = json.loads((stopped / "metrics.json").read_text())
    assert partial["finished"] is False and "final_test_acc" not in partial
    assert (partial["epochs_done"], partial["epochs_total"]) == (2, 4)
    assert [row["epoch"] for row in partial["epochs"]] == [1, 2]
    assert "test_acc" in partial["epochs"][1] and not (stopped / "model.pt").exists()

    resumed = _tiny_digits_run(stopped)
    whole = _tiny_digits_run(tmp_path / "whole")
    on_disk = json.loads((stopped / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(resumed))  # what fit returns is what it wrote
    assert on_disk["finished"] is True and on_disk["epochs_done"] == 4
    assert on_disk["epochs"][:2] == partial["epochs"]
    del resumed["wall_seconds"], whole["wall_seconds"]
    assert resumed == whole


def test_the_bar_shows_the_epoch_running_loss_and_accuracy(tmp_path, monkeypatch):
    """With progress on, the training bar's postfix carries the running loss and accuracy; at
    the epoch's last batch they are the epoch's (here read every batch: interval 0)."""
    postfixes = []

    class RecordingBar:
        def __init__(self, iterable, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix_str(self, text, refresh=True):
            postfixes.append(text)

    monkeypatch.setattr(train, "tqdm", RecordingBar)
    monkeypatch.setattr(train, "POSTFIX_SECONDS", 0.0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = data.tensors("digits", "train")
    batches = loaders.TensorLoader(x, y, data.info("digits"), 512, shuffle=True, augment=False)
    recipe = Recipe()
    opt = train.optimizer_for(net, recipe)
    step = train.step_function(net, opt, recipe, "cpu", amp=False)
    never = lambda: False  # noqa: E731 (no stop signal)
    row, images, _ = train._train_epoch(step, net, opt, recipe, batches, 0, 0, "cpu", never, True)
    assert images == len(y) and len(postfixes) == len(batches)
    assert postfixes[-1] == f"loss {row['train_loss']:.3f}  acc {row['train_acc']:.1%}"


def test_the_recipe_batch_is_the_global_batch_under_ddp():
    """Each of N processes draws batch_size / N per step; a batch that does not split evenly
    is refused, naming the multiple to use."""
    from sosp.commands.train import per_rank_batch

    assert per_rank_batch(256, 1) == 256 and per_rank_batch(256, 4) == 64
    with pytest.raises(BadInput, match="multiple of 3"):
        per_rank_batch(256, 3)
