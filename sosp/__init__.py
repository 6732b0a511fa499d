"""Second-order structured pruning (SOSP-I, SOSP-H; Nonnenmacher et al., ICLR 2022).

r = sosp.prune(model, method="sosp_h", ratio=0.5, data=batches)
r.mask, r.model, r.order, r.scores, r.report

The names below, and the submodules (`sosp.methods`, `sosp.models`, ...), are imported on first
use, so `import sosp` (and `sosp --help`) does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sosp")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "unknown"

_HOMES = {
    "PruneResult": "sosp.api",
    "apply_mask": "sosp.api",
    "prune": "sosp.api",
    "prune_ratios": "sosp.api",
    "load_mask": "sosp.paths",
    "load_model": "sosp.paths",
    "save_mask": "sosp.paths",
    "PruneSettings": "sosp.settings",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """An exported name from its module, or a submodule, imported on first use."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'sosp' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
