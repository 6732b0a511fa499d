"""`--batch-size auto`: as many pruning samples per saliency pass as the device's memory holds.

The memory of a pass is about a + c * B for B samples: `a` what does not depend on the batch
(the network, SOSP-I's S x S matrix), `c` per sample (the activations the passes keep). Both
come from running the method itself on 1 and 2 samples (`probe_bytes`):
- on CUDA, the allocator's peak above what was allocated before (everything the pass holds at
  once, temporaries included);
- on other devices, the bytes of the tensors autograd saves for its backward passes (a lower
  bound of the peak: no allocator statistics there), so the budget is taken at half.
The batch is then the largest whose a + c * B fits in `FRACTION` of the memory free now, at
most the N' samples (`fitting_batch_size`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sosp import methods
from sosp.errors import BadInput
from sosp.settings import PruneSettings
from sosp.structures import analyze

FRACTION = {"cuda": 0.8}  # of the free memory; other devices (host memory, lower bound) 0.5
PROBES = (1, 2)


@dataclass(frozen=True)
class AutoBatch:
    """The batch `auto` chose and what it was chosen from (bytes)."""

    batch_size: int
    fixed_bytes: int  # a
    per_sample_bytes: int  # c
    budget_bytes: int  # the fraction of the free memory it had to fit in
    measured: str  # "allocator peak" or "saved tensors"

    def line(self, device: torch.device) -> str:
        mib = 2**20
        return (
            f"batch size auto: {self.batch_size} samples per pass on {device} "
            f"({self.fixed_bytes / mib:.0f} MiB + {self.per_sample_bytes / mib:.1f} MiB per "
            f"sample by {self.measured}, within {self.budget_bytes / mib:.0f} MiB)"
        )


def fitting_batch_size(fixed: float, per_sample: float, budget: float, most: int) -> int:
    """The largest B in [1, `most`] with `fixed` + `per_sample` * B <= `budget` (1 where none
    fits: the pass then runs one sample at a time, as small as it gets)."""
    if per_sample <= 0:
        return most
    return max(1, min(most, int((budget - fixed) // per_sample)))


def auto_batch_size(run_pass: Callable[[int], None], device: torch.device, most: int) -> AutoBatch:
    """Choose the batch size of `run_pass(b)` (one saliency pass over b samples) on `device`,
    at most `most`, for the memory free now."""
    peaks = [probe_bytes(run_pass, b, device) for b in PROBES]
    per_sample = max(0, (peaks[1] - peaks[0]) // (PROBES[1] - PROBES[0]))
    fixed = max(0, peaks[0] - per_sample * PROBES[0])
    budget = int(free_bytes(device) * FRACTION.get(device.type, 0.5))
    size = fitting_batch_size(fixed, per_sample, budget, most)
    measured = "allocator peak" if device.type == "cuda" else "saved tensors"
    return AutoBatch(size, fixed, per_sample, budget, measured)


def probe_bytes(run_pass: Callable[[int], None], b: int, device: torch.device) -> int:
    """Bytes `run_pass(b)` holds on `device`: its allocator peak on CUDA, elsewhere the bytes
    of the distinct storages autograd saves for backward while it runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run_pass(b)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run_pass(b)
    return sum(seen.values())


def free_bytes(device: torch.device) -> int:
    """Memory free on `device` now: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


@torch.inference_mode(False)  # the probes differentiate, whatever the caller's grad mode
@torch.enable_grad()
def for_method(
    model: nn.Module,
    method: str,
    probe: tuple[torch.Tensor, torch.Tensor],
    settings: PruneSettings | None = None,
    options: dict | None = None,
) -> AutoBatch:
    """`auto_batch_size` of `method`'s saliency pass on `model` (on its device), probed on
    the first 1 and 2 samples of `probe` (inputs, labels), at most `settings.n_samples`."""
    settings = settings or PruneSettings()
    options = methods.registry.checked_options(method, options or {})
    x, y = probe
    if len(x) < max(PROBES):
        raise BadInput(f"batch size auto probes on {max(PROBES)} samples; the data has {len(x)}")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    graph = analyze(model, tuple(x.shape[1:]), settings.exclude, settings.coupling)

    def run_pass(b: int) -> None:
        ctx = methods.Context(model, graph, [(x[:b], y[:b])], settings.loss, b, settings.seed)
        methods.get(method)(ctx, **options)

    return auto_batch_size(run_pass, device, settings.n_samples)
