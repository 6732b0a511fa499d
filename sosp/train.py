"""Training and fine-tuning: SGD with the recipe's schedule, a checkpoint after every epoch,
exact resume, and a clean stop on SIGTERM.

A run lives in one folder (its files are named in `sosp.paths`): the last checkpoint and the
metrics, both rewritten after every epoch; the final network as a model file. The metrics say
"finished": false with the epochs done so far while the run goes on, and "finished": true with
the final test accuracy once it is complete. After every epoch one line (`epoch_line`) is
printed, with or without the progress bar. Re-running the same command resumes from the last
checkpoint, and does nothing once the metrics say the run finished. Every random draw of epoch
e is seeded by (seed, e) (see `sosp.loaders`), so a resumed run reaches the same weights as an
uninterrupted one on the same machine.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sosp import loaders, paths, retraining
from sosp.errors import BadInput, SospError
from sosp.graphed_step import GraphedStep, check_supported, world_size
from sosp.hooks import Hook
from sosp.io import atomic_save, atomic_write_json, load_checkpoint, read_json
from sosp.modes import eval_mode
from sosp.recipes import Recipe

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
POSTFIX_SECONDS = 0.5  # the bar's running loss and accuracy: at most this often (a device sync)


class Preempted(SospError):
    """A stop signal arrived; the last completed epoch is in the run's last checkpoint."""

    exit_code = 143  # 128 + SIGTERM, what a process killed by SIGTERM reports


def lr_at(recipe: Recipe, epoch: float) -> float:
    """Learning rate of epoch `epoch` (0-based; fractional within an epoch): steps of `gamma`
    at each milestone reached, or a cosine from `lr` towards 0 over the cycle, or a retraining
    schedule (`sosp.retraining`) after `recipe.original`; each of `cycles` cycles starts over."""
    epoch %= recipe.epochs
    if recipe.schedule in retraining.SCHEDULES:
        original = recipe.original
        return retraining.SCHEDULES[recipe.schedule](
            epoch, recipe.epochs, lambda e: lr_at(original, e), original.total_epochs
        )
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
    return recipe.lr


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def add_bn_l1_grad(model: nn.Module, strength: float) -> None:
    """Network Slimming's sparsity term: d/dgamma of strength * sum |gamma| over all BNs."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight.grad is not None:
            m.weight.grad.add_(strength * torch.sign(m.weight.detach()))


@torch.no_grad()
def evaluate(
    model: nn.Module, batches, device, amp: bool = False, progress: bool = False, desc="test"
) -> dict[str, float]:
    """Mean cross-entropy and accuracy (in [0, 1]) of `model` in eval mode over `batches`;
    `progress`: a progress bar named `desc`, gone when done."""
    loss, correct, n = 0.0, 0, 0
    with eval_mode(model):
        for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(device, amp):
                out = model(x)
            loss += F.cross_entropy(out.float(), y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}


def _autocast(device, amp: bool, cache: bool = True):
    """bf16 autocast on CUDA with `amp`; `cache`: autocast's cache of cast weights (off while a
    CUDA graph is captured)."""
    kind = torch.device(device).type
    return torch.autocast(
        kind, dtype=torch.bfloat16, enabled=amp and kind == "cuda", cache_enabled=cache
    )


@contextmanager
def stop_on_signal() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGTERM/SIGUSR1 set a flag instead of killing the process; yields a
    function that says whether one arrived."""
    if not _is_main_thread():
        yield lambda: False
        return
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda num, _frame: arrived.append(num)) for s in STOP_SIGNALS}
    try:
        yield lambda: bool(arrived)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def fit(
    model: nn.Module,
    recipe: Recipe,
    train_batches,
    test_batches,
    out: str | os.PathLike,
    *,
    config: dict,
    architecture: dict,
    seed: int = 0,
    device: str = "cpu",
    amp: bool = False,
    logger=None,
    progress: bool = True,
    rank: int = 0,
    cuda_graph: bool = False,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Train `model` by `recipe` on `train_batches` (a loader with `set_epoch`), evaluating on
    `test_batches`; the checkpoint and the metrics so far are rewritten in the run folder `out`
    after every epoch, and rank 0 prints its `epoch_line`. `progress`: a bar per epoch with
    the running loss and accuracy, and one per evaluation. `config` is everything
    that defines the run: a checkpoint made under another config is refused. The final network
    is saved as a model file with `architecture` ({"model", "dataset"}, and "mask", "exclude"
    for a pruned one; see `sosp.paths.model_file`). `cuda_graph`: run the training step as a
    captured CUDA graph (`sosp.graphed_step.GraphedStep`: the same SGD updates; CUDA and one
    process only, else `BadInput`). `hooks` (`sosp.hooks.Hook`): called after every step and
    epoch (and once before the first), their state checkpointed with the run's; one process
    only. Returns the metrics (empty on ranks > 0). Raises `Preempted` after SIGTERM/SIGUSR1."""
    if cuda_graph:
        check_supported(device, world_size())
    if hooks and world_size() > 1:
        raise BadInput(
            f"{', '.join(h.name for h in hooks)} runs in one process only; train on one GPU "
            "(gpu: 1 in the config, or without torchrun)"
        )
    config = {**config, **{f"hook_{h.name}": h.config() for h in hooks}}
    out = Path(out)
    done = _finished(out, config)
    if done is not None:
        if rank == 0:
            print(f"{out}: finished earlier (final test acc {done['final_test_acc']:.4f})")
        return done
    net = model.module if hasattr(model, "module") else model  # unwrapped under DDP
    opt = optimizer_for(model, recipe)
    state = _resumed(out, config, net, opt, recipe, rank, hooks)
    for hook in hooks:
        hook.start(net, opt, out)
    if state.epoch == 0:
        for hook in hooks:
            hook.after_epoch(0, net, opt)
    step = step_function(model, opt, recipe, device, amp, cuda_graph)  # after the resume
    started, first = time.perf_counter(), state.epoch
    with stop_on_signal() as stopped:
        for epoch in range(state.epoch, recipe.total_epochs):
            row, images, train_seconds = _train_epoch(
                step,
                model,
                opt,
                recipe,
                train_batches,
                epoch,
                seed,
                device,
                stopped,
                progress,
                hooks,
            )
            for hook in hooks:  # before the test: a round of pruning is tested at once
                row.update(hook.after_epoch(epoch + 1, net, opt))
            if (epoch + 1) % recipe.test_every == 0 or epoch + 1 == recipe.total_epochs:
                test = evaluate(net, test_batches, device, amp, progress)
                row.update(test_loss=test["loss"], test_acc=test["acc"])
            state.advance(row, time.perf_counter() - started)
            if rank == 0:
                _save_checkpoint(out, state, net, opt, config, hooks)  # before the metrics
                metrics = _metrics(state, recipe, device, seed, config, finished=False)
                atomic_write_json(paths.metrics(out), metrics)
                per_epoch = state.wall_now / (epoch + 1 - first)  # this process's epochs
                eta = per_epoch * (recipe.total_epochs - epoch - 1)
                speed = images * world_size() / train_seconds
                print(epoch_line(row, recipe.total_epochs, speed, eta), flush=True)
                if logger is not None:
                    logger.log(row, step=epoch + 1)
            if stopped():
                raise Preempted(_preempted_message(out, epoch + 1))
    if rank != 0:
        return {}
    final = net.float()
    for hook in hooks:
        final, entries = hook.finish(final)
        architecture = {**architecture, **entries}
    paths.save_model(paths.model(out), final, architecture)
    state.wall_now = time.perf_counter() - started
    metrics = _metrics(state, recipe, device, seed, config, finished=True)
    atomic_write_json(paths.metrics(out), metrics)
    return metrics


def epoch_line(row: dict, total_epochs: int, images_per_second: float, eta_seconds: float) -> str:
    """The line printed after each epoch, from its metrics row (see `_train_epoch`): e.g.
    `epoch 3/30  loss 1.234  acc 56.7%  test acc 55.1%  lr 0.1  1,234 img/s  ETA 4m10s`, the
    test accuracy only where the epoch was tested."""
    parts = [
        f"epoch {row['epoch']}/{total_epochs}",
        f"loss {row['train_loss']:.3f}",
        f"acc {row['train_acc']:.1%}",
    ]
    if "test_acc" in row:
        parts.append(f"test acc {row['test_acc']:.1%}")
    parts += [
        f"lr {row['lr']:.3g}",
        f"{images_per_second:,.0f} img/s",
        f"ETA {_duration(eta_seconds)}",
    ]
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    """`seconds` as 1h05m, 4m10s or 12s."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@dataclass
class _Progress:
    """How far a run got: epochs done, their metric rows, and the wall time (s) spent in
    earlier processes and in this one."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    wall_before: float = 0.0  # in processes before this one (a resumed run)
    wall_now: float = 0.0  # in this process

    @property
    def wall_seconds(self) -> float:
        return self.wall_before + self.wall_now

    def advance(self, row: dict, wall_now: float) -> None:
        self.epoch, self.wall_now = self.epoch + 1, wall_now
        self.history.append(row)


def _finished(out: Path, config: dict) -> dict | None:
    """The metrics of a run already finished in `out` under `config`, else None."""
    if not (paths.metrics(out).is_file() and paths.model(out).is_file()):
        return None
    done = read_json(paths.metrics(out))
    return done if done.get("finished") and done.get("config") == config else None


def _resumed(
    out: Path, config: dict, net, opt, recipe: Recipe, rank: int, hooks: Sequence[Hook] = ()
) -> _Progress:
    """The progress of an interrupted run in `out`, its weights, optimizer state and hook
    states loaded into `net`, `opt` and `hooks`; a fresh start when there is none."""
    last = paths.last_checkpoint(out)
    if not last.is_file():
        return _Progress()
    ckpt = load_checkpoint(last)
    if ckpt.get("config") != config:
        raise BadInput(
            f"{last} was written by a different run configuration; use another --out "
            f"or delete {out} to start over"
        )
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    for hook in hooks:
        hook.load_state_dict(ckpt.get("hooks", {}).get(hook.name, {}))
    if rank == 0:
        print(f"{out}: resuming after epoch {ckpt['epoch']} of {recipe.total_epochs}")
    return _Progress(ckpt["epoch"], ckpt["history"], ckpt["wall_seconds"])


def _save_checkpoint(
    out: Path, state: _Progress, net, opt, config: dict, hooks: Sequence[Hook] = ()
) -> None:
    checkpoint = {
        "hooks": {h.name: h.state_dict() for h in hooks},
        "epoch": state.epoch,
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "history": state.history,
        "wall_seconds": state.wall_seconds,
        "config": config,
    }
    atomic_save(checkpoint, paths.last_checkpoint(out))


def _metrics(
    state: _Progress, recipe: Recipe, device: str, seed: int, config: dict, *, finished: bool
) -> dict:
    """The metrics of a run: whether it `finished`, epochs done of all, every epoch's row so
    far, wall time (s), device, versions, config; a finished run's add its final and best test
    accuracy. Only the wall time differs between a resumed and an uninterrupted run."""
    return {
        "finished": finished,
        **(_final_test(state.history) if finished else {}),
        "epochs_done": len(state.history),
        "epochs_total": recipe.total_epochs,
        "epochs": state.history,
        "wall_seconds": state.wall_seconds,
        "device": _device_name(device),
        "seed": seed,
        "versions": versions(),
        "config": config,
    }


def _final_test(history: list[dict]) -> dict:
    """Final and best test accuracy of a finished run's rows (its last epoch is tested)."""
    tested = [r for r in history if "test_acc" in r]
    return {
        "final_test_acc": tested[-1]["test_acc"],
        "final_test_loss": tested[-1]["test_loss"],
        "best_test_acc_selected_on_test": max(r["test_acc"] for r in tested),
    }


def _train_epoch(
    step, model, opt, recipe, batches, epoch, seed, device, stopped, progress, hooks=()
) -> tuple[dict, int, float]:
    """One epoch of `step` (see `step_function`) at the epoch's lr; returns its metrics row,
    the images it trained on and its seconds. `progress`: a bar with the running loss and
    accuracy, read off the device at most every `POSTFIX_SECONDS`."""
    started = time.perf_counter()
    lr = lr_at(recipe, epoch)
    for group in opt.param_groups:
        group["lr"] = lr
    torch.manual_seed(loaders.epoch_seed(seed, epoch))  # dropout and other global draws
    batches.set_epoch(epoch)
    model.train()
    total_loss = torch.zeros((), device=device)  # summed on the device: no sync per batch
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    bar = tqdm(
        batches, desc=f"epoch {epoch + 1}/{recipe.total_epochs}", disable=not progress, leave=False
    )
    next_postfix = time.monotonic() + POSTFIX_SECONDS
    for x, y in bar:
        loss, out, y = step(x, y)  # read before the next step: a graph's outputs are static
        for hook in hooks:
            hook.after_step(model, opt)
        total_loss += loss.detach() * len(y)
        correct += (out.argmax(1) == y).sum()
        n += len(y)
        if progress and time.monotonic() >= next_postfix:  # a sync, so not every batch
            bar.set_postfix_str(
                f"loss {total_loss.item() / n:.3f}  acc {correct.item() / n:.1%}", refresh=False
            )
            next_postfix = time.monotonic() + POSTFIX_SECONDS
        if stopped():
            raise Preempted(
                f"stopped by a signal during epoch {epoch + 1}; re-run the same command to "
                f"resume from epoch {epoch} ({paths.LAST_CHECKPOINT})"
            )
    mean_loss = total_loss.item() / n
    if not math.isfinite(mean_loss):
        raise BadInput(f"the training loss became {mean_loss} in epoch {epoch + 1}; lower lr")
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": mean_loss, "train_acc": correct.item() / n}
    return row, n, time.perf_counter() - started


def step_function(model, opt, recipe: Recipe, device, amp: bool, cuda_graph: bool = False):
    """The training step `fit` calls per batch: (x, y) -> (loss, logits, y on the device), one
    SGD update each. Eager: `train_step`. With `cuda_graph`: a `GraphedStep` that captures that
    same `train_step` once as a CUDA graph and replays it (refused off CUDA and under DDP)."""

    def step(x, y, capturing: bool = False):
        return train_step(model, opt, x, y, recipe, device, amp, capturing=capturing)

    if cuda_graph:
        return GraphedStep(model, opt, step, device=device, channels_last=amp)
    return step


def train_step(model, opt, x, y, recipe: Recipe, device, amp: bool, *, capturing: bool = False):
    """One SGD step on the batch (x, y); `amp`: bf16 autocast and channels_last inputs (CUDA).
    Returns (loss, logits, y on the device). The one step body of both training paths:
    `GraphedStep` captures this function on its static input buffers (already on the device
    and in layout, so the moves below are no-ops) with `capturing=True`, which only turns off
    autocast's cache of cast weights, as CUDA-graph capture requires."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp, cache=not capturing):
        out = model(x)
        loss = F.cross_entropy(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.bn_l1:
        add_bn_l1_grad(model, recipe.bn_l1)
    opt.step()
    return loss, out, y


def _preempted_message(out: Path, epoch: int) -> str:
    return f"stopped by a signal after epoch {epoch}; re-run the same command to resume ({out})"


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import torchvision

    from sosp import __version__

    return {
        "sosp": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": sys.version.split()[0],
    }
