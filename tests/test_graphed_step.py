"""The CUDA-graph training step (`sosp.graphed_step`): refused off CUDA and under DDP, the CLI
flag, and its schedule of updates. On the CPU a stand-in for the graph (`BakedGraph`) keeps
what matters for that schedule: capture runs nothing, and a replay runs the step with what was
baked in at capture (lr and the other SGD settings, train/eval, the optimizer state), so a
missed replay or recapture changes the weights. `tests/test_device.py` runs the real graph
against the eager step on CUDA with the same helpers."""

import copy
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from sosp import cli, data, loaders, train
from sosp.commands import train as train_command
from sosp.errors import BadInput
from sosp.graphed_step import GraphedStep, check_supported
from sosp.recipes import Recipe
from tests.test_cli import run_sosp

META = data.info("digits")  # 1 x 8 x 8
N, BATCH = 101, 16  # six full batches and a last one of 5
GRAPH_ARGS = ["train", "--model", "resnet20", "--dataset", "digits", "--no-progress"]


class BakedGraph(GraphedStep):
    """`GraphedStep` with its three CUDA calls replaced by a CPU stand-in: capture records
    only the settings a CUDA graph bakes in; replay runs the step under those settings."""

    @staticmethod
    def _check(model, opt, device):
        pass

    @contextmanager
    def _side_stream(self):
        yield

    def _capture(self):
        self.opt.zero_grad(set_to_none=True)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]
        self._graph = (groups, self.model.training, self.opt.state)

    def _replay(self):
        groups, training, state = self._graph
        now = [dict(g) for g in self.opt.param_groups]
        now_training, now_state = self.model.training, self.opt.state
        for g, baked in zip(self.opt.param_groups, groups, strict=True):
            g.update(baked)
        self.model.train(training)
        self.opt.state = state
        try:
            self._loss, self._out, _ = self.step(self._x, self._y, capturing=True)
        finally:
            for g, was in zip(self.opt.param_groups, now, strict=True):
                g.update(was)
            self.model.train(now_training)
            self.opt.state = now_state


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def two_epochs(device, step_kind, *, amp=False, schedule="step", reload=False):
    """Train `tiny_cnn` for two epochs of 7 batches (lr x0.1 after the first with the step
    schedule) with `step_kind` "eager", "graph" (the real `GraphedStep`) or a stand-in class
    such as `BakedGraph`; `reload`:
    load the optimizer's state dict (new tensors) between the epochs, as a resume does.
    Returns (model, opt, step, the epochs' metric rows)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(N, 1, 8, 8, generator=g), torch.randint(10, (N,), generator=g)
    model = tiny_cnn().to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    recipe = Recipe(
        epochs=2, batch_size=BATCH, lr=0.1, nesterov=True, weight_decay=5e-4,
        schedule=schedule, milestones=(1,), bn_l1=1e-4,
    )  # fmt: skip
    opt = train.optimizer_for(model, recipe)
    step = train.step_function(model, opt, recipe, str(device), amp, step_kind == "graph")
    if isinstance(step_kind, type):
        step = step_kind(model, opt, step, device=device, channels_last=amp)
    batches = loaders.TensorLoader(
        x, y, META, BATCH, shuffle=True, augment=True, device=device, seed=0
    )
    rows = []
    for epoch in range(2):
        if reload and epoch == 1:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        row, _, _ = train._train_epoch(
            step, model, opt, recipe, batches, epoch, 0, device, lambda: False, False
        )  # (row, images, seconds): the seconds differ from run to run
        rows.append(row)
    return model, opt, step, rows


def counts(step) -> tuple[int, int, int, int]:
    return step.warmup_steps, step.captures, step.replays, step.eager_steps


def momentum(opt) -> list[torch.Tensor]:
    return [s["momentum_buffer"] for s in opt.state_dict()["state"].values()]


def assert_same_training(a, b):
    """Bit-identical weights, BN statistics, num_batches_tracked, momentum buffers and losses."""
    (model_a, opt_a, _, rows_a), (model_b, opt_b, _, rows_b) = a, b
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ma, mb = momentum(opt_a), momentum(opt_b)
    assert len(ma) == len(mb) == len(list(model_a.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(ma, mb, strict=True))
    assert rows_a == rows_b


@pytest.mark.parametrize(
    ("schedule", "reload", "captures"),
    [("step", False, 2), ("constant", False, 1), ("constant", True, 2)],
)
def test_graph_schedule_makes_the_eager_updates(schedule, reload, captures):
    """Per epoch of 6 full batches and a short one: 3 warm-up steps (first epoch), a capture
    followed by a replay, replays, the short batch eagerly; a recapture when the lr changed or
    the optimizer state was loaded, and only then. With the stand-in, the updates are the eager
    step's, bit for bit: weights, BN statistics, momentum buffers, losses."""
    eager = two_epochs("cpu", "eager", schedule=schedule, reload=reload)
    baked = two_epochs("cpu", BakedGraph, schedule=schedule, reload=reload)
    assert counts(baked[2]) == (3, captures, 9, 2)
    assert_same_training(eager, baked)
    assert eager[0][1].num_batches_tracked.item() == 14


def test_a_stale_graph_would_be_caught():
    """The stand-in is strict enough to matter: a step that never notices a change of settings
    trains differently from the eager step once the lr drops."""

    class NeverRecaptures(BakedGraph):
        def _settings(self):
            return ()

    eager = two_epochs("cpu", "eager")
    stale = two_epochs("cpu", NeverRecaptures)
    assert stale[2].captures == 1
    assert not torch.equal(stale[0][-1].weight, eager[0][-1].weight)


def test_cuda_graph_is_refused_on_the_cpu(tmp_path):
    """fit, GraphedStep and check_supported stop with one line naming the fix, before any file
    is written; under DDP (world > 1) likewise."""
    model = tiny_cnn()
    opt = train.optimizer_for(model, Recipe())
    with pytest.raises(BadInput, match="needs a CUDA device, not 'cpu'; pass --device cuda"):
        train.fit(
            model, Recipe(epochs=1), [], [], tmp_path / "run", config={}, architecture={},
            device="cpu", cuda_graph=True,
        )  # fmt: skip
    assert not (tmp_path / "run").exists()
    with pytest.raises(BadInput, match="needs a CUDA device"):
        GraphedStep(model, opt, lambda x, y, capturing=False: None, device="cpu")
    with pytest.raises(BadInput, match="not under DDP .2 processes.; run without torchrun"):
        check_supported("cuda", world=2)
    check_supported("cuda:1", world=1)


def test_cli_refuses_cuda_graph_on_the_cpu(tmp_path):
    """`--cuda-graph` on the CPU exits 2 with one line naming the fix; nothing is written."""
    out = tmp_path / "run"
    r = run_sosp(*GRAPH_ARGS, "--device", "cpu", "--cuda-graph", "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "sosp train: error: the CUDA-graph training step (--cuda-graph) needs a CUDA device, "
        "not 'cpu'; pass --device cuda, or leave --cuda-graph off"
    ]
    assert not out.exists()


def test_cli_refuses_cuda_graph_under_torchrun(monkeypatch, tmp_path, capsys):
    """Under torchrun (WORLD_SIZE > 1) it is refused before joining a process group."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = [*GRAPH_ARGS, "--device", "cuda", "--cuda-graph", "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    assert "not under DDP (2 processes)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", [[], ["--no-cuda-graph"], ["--cuda-graph"]])
def test_cli_flag_reaches_fit_and_the_run_config(flag, monkeypatch, tmp_path):
    """`--cuda-graph` is passed to fit and recorded in the run config as cuda_graph: true;
    off (the default) the config has no such key, so earlier run folders stay resumable."""
    seen = {}

    def fake_fit(model, recipe, train_batches, test_batches, out, **kwargs):
        seen.update(kwargs)
        return {"final_test_acc": 0.5, "best_test_acc_selected_on_test": 0.5, "wall_seconds": 1}

    monkeypatch.setattr(train_command, "fit", fake_fit)
    monkeypatch.setattr(train_command, "check_supported", lambda device, world: None)
    args = [*GRAPH_ARGS, "--device", "cpu", *flag, "--out", str(tmp_path / "run")]
    assert cli.main(args) == 0
    on = flag == ["--cuda-graph"]
    assert seen["cuda_graph"] is on
    assert seen["config"].get("cuda_graph") is (True if on else None)


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_cli_help_says_the_flag_is_off_until_measured(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--cuda-graph, --no-cuda-graph" in text
    assert "Default off until measured on a GPU" in text
