"""The training step as one CUDA graph: captured once, replayed for every batch (opt-in).

At the paper's batch 128 a ResNet-56 step on a large GPU is bound by kernel launches, not by
arithmetic: the eager step launches each of its kernels from Python. `GraphedStep` follows
PyTorch's whole-network capture recipe (torch.cuda.graphs): warm-up steps on a side stream,
`zero_grad(set_to_none=True)`, then forward, loss, backward and `opt.step()` captured in
`torch.cuda.graph`; afterwards each batch is copied into static input buffers and the graph is
replayed: two input copies and one graph launch per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sosp.errors import BadInput

Step = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def world_size() -> int:
    """Processes in the default process group (1 without torch.distributed)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def check_supported(device: str | torch.device, world: int = 1) -> None:
    """Raise `BadInput` where the CUDA-graph step cannot run: off CUDA, or under DDP."""
    if torch.device(device).type != "cuda":
        raise BadInput(
            f"the CUDA-graph training step (--cuda-graph) needs a CUDA device, not {device!r}; "
            "pass --device cuda, or leave --cuda-graph off"
        )
    if world > 1:
        raise BadInput(
            f"the CUDA-graph training step (--cuda-graph) runs in one process, not under DDP "
            f"({world} processes); run without torchrun, or leave --cuda-graph off"
        )


class GraphedStep:
    """One SGD update per call, like `step` (in practice `sosp.train.train_step`), with every
    batch of the captured shape run as a replay of one CUDA graph of `step`.

    `step(x, y, capturing=False)` -> (loss, logits, y on the device) does one whole update
    (forward, loss, backward, any gradient terms, `opt.step()`). It is the only step body: the
    eager batches run it, and the capture records it with `capturing=True` on the static input
    buffers (`train_step` then turns off autocast's weight cache, as capture requires). In the
    order the batches come, each call is one real update on its own batch:

    - the first `warmup` (>= 1) batches of the captured shape (the shape of the first batch) run
      `step` on a side stream, PyTorch's warm-up before capture (lazy initialization; SGD's
      momentum buffers come into being here, so the capture records their update, not their
      creation; a capture waits for more warm-up steps while a parameter lacks its buffer);
    - the next one is copied into the static buffers, captured (capture runs nothing) and
      replayed once; every later one is copied in and replayed;
    - a batch of another shape (the short last batch of an epoch) runs `step` eagerly.

    The learning rate and the other SGD settings are Python floats baked into the captured
    `opt.step()`: before each replay the step compares the param groups' settings, the model's
    train/eval flag and the identity of `opt.state` (which `opt.load_state_dict` replaces) with
    those of the capture, and captures anew on any difference (no warm-up again). `fit` sets the
    lr per epoch, so a schedule costs one capture per epoch whose lr changed. BatchNorm running
    statistics and `num_batches_tracked` update in place in the graph.

    Limits: CUDA, one process (not DDP: `check_supported`); `torch.optim.SGD` with float
    settings. The returned tensors are the graph's static outputs: read them before the next
    call. The parameters, buffers and optimizer state must keep their tensors (in-place updates
    only; `load_state_dict` of the optimizer is detected, `model.to(...)` is not). The captured
    code must be free of host synchronization (`.item()`, data-dependent Python branches):
    BatchNorm with `momentum=None` reads `num_batches_tracked` on the host and cannot be captured.
    The graph keeps a private memory pool of about one step's activations until it is released
    (a recapture or the object's deletion). Random ops (dropout) draw from PyTorch's graph-safe
    generator, not necessarily the same numbers as the eager step (the zoo's own CNNs have
    none).
    """

    WARMUP = 3  # steps before the first capture, as in PyTorch's whole-network example

    def __init__(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        step: Step,
        *,
        device: str | torch.device,
        channels_last: bool = False,
        warmup: int = WARMUP,
    ):
        self._check(model, opt, device)
        if warmup < 1:
            raise BadInput(
                f"the CUDA-graph step needs warmup >= 1 before its capture, not {warmup}"
            )
        self.model, self.opt, self.step = model, opt, step
        self.device, self.channels_last, self.warmup = torch.device(device), channels_last, warmup
        self.warmup_steps = self.captures = self.replays = self.eager_steps = 0
        self._shape: tuple | None = None  # (x shape, x dtype, y shape, y dtype) captured
        self._x = self._y = None  # static input buffers
        self._loss = self._out = None  # static outputs
        self._graph = None
        self._key: tuple | None = None  # settings the graph was captured with
        self._state = None  # the opt.state dict the graph was captured with
        self._stream = None  # side stream of the warm-up steps

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        shape = (tuple(x.shape), x.dtype, tuple(y.shape), y.dtype)
        if self._shape is None:
            self._shape = shape
        if shape != self._shape:
            self.eager_steps += 1
            return self.step(x, y)
        key = self._settings()
        if self._graph is None or key != self._key or self.opt.state is not self._state:
            if self.warmup_steps < self.warmup or not self._state_ready():
                self.warmup_steps += 1
                with self._side_stream():
                    return self.step(x, y)
            self._load(x, y)
            self._capture()
            self._key, self._state = key, self.opt.state
            self.captures += 1
        else:
            self._load(x, y)
        self._replay()
        self.replays += 1
        return self._loss, self._out, self._y

    def _settings(self) -> tuple:
        """What the capture bakes in besides tensors: the train/eval flag and every param
        group's settings (lr, momentum, weight decay, ...)."""
        groups = tuple(
            tuple((k, v) for k, v in group.items() if k != "params")
            for group in self.opt.param_groups
        )
        return self.model.training, groups

    def _state_ready(self) -> bool:
        """Whether every parameter with a gradient has its momentum buffer. SGD makes it on the
        parameter's first step; captured then, each replay would make it anew."""
        for group in self.opt.param_groups:
            if group["momentum"]:
                for p in group["params"]:
                    state = self.opt.state.get(p, {})
                    if p.grad is not None and state.get("momentum_buffer") is None:
                        return False
        return True

    def _load(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Copy the batch into the static input buffers (made on first use)."""
        if self._x is None:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self._x = torch.empty(x.shape, dtype=x.dtype, device=self.device, memory_format=fmt)
            self._y = torch.empty(y.shape, dtype=y.dtype, device=self.device)
        self._x.copy_(x, non_blocking=True)
        self._y.copy_(y, non_blocking=True)

    # -- the CUDA calls (a CPU test double replaces these three) ----------------------------

    @contextmanager
    def _side_stream(self) -> Iterator[None]:
        """Run the block on the warm-up stream, ordered after and before the current stream's
        work (so the batch is ready, and what the step wrote is read after it)."""
        with torch.cuda.device(self.device):
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            current = torch.cuda.current_stream(self.device)
            self._stream.wait_stream(current)
            try:
                with torch.cuda.stream(self._stream):
                    yield
            finally:
                current.wait_stream(self._stream)

    def _capture(self) -> None:
        """Record `step` on the static buffers, in place of the graph captured before (if any);
        nothing runs until `_replay`."""
        if self._graph is not None:
            torch.cuda.synchronize(self.device)  # no replay of the old graph in flight
            self._graph = self._loss = self._out = None  # its memory pool goes with them
        self.opt.zero_grad(set_to_none=True)  # backward makes the grads in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.device):
            # thread_local: a DataLoader's pin-memory thread may call CUDA during the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._loss, self._out, _ = self.step(self._x, self._y, capturing=True)
        self._graph = graph

    def _replay(self) -> None:
        self._graph.replay()

    @staticmethod
    def _check(model: nn.Module, opt: torch.optim.Optimizer, device) -> None:
        check_supported(device, world_size())
        if isinstance(model, nn.parallel.DistributedDataParallel):
            raise BadInput("the CUDA-graph step takes a plain model, not a DDP-wrapped one")
        if not isinstance(opt, torch.optim.SGD):
            raise BadInput(
                f"the CUDA-graph step supports torch.optim.SGD, not {type(opt).__name__}"
            )
