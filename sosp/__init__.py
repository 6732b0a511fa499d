"""Second-order structured pruning (SOSP-I, SOSP-H; Nonnenmacher et al., ICLR 2022).

r = sosp.prune(model, method="sosp_h", ratio=0.5, data=batches)
r.mask, r.model, r.order, r.scores, r.report
"""

from importlib.metadata import PackageNotFoundError, version

from sosp.api import PruneResult, apply_mask, prune, prune_ratios
from sosp.paths import load_mask, load_model, save_mask
from sosp.settings import PruneSettings

try:
    __version__ = version("sosp")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "unknown"

__all__ = [
    "PruneResult",
    "PruneSettings",
    "apply_mask",
    "load_mask",
    "load_model",
    "prune",
    "prune_ratios",
    "save_mask",
]
