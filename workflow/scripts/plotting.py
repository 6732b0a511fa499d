"""What the report scripts share about figures: `save`, a figure written as PNG atomically, and
`legend_right`, the legend beside the last panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from sosp.io import atomic_write


def save(fig, path: Path) -> None:
    """Lay out `fig`, write it to `path` as a 130-dpi PNG atomically, and close it."""
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=130))
    plt.close(fig)


def legend_right(ax, fontsize: int = 7) -> None:
    """The legend of `ax` outside it, centred on its right edge (the panels keep their width)."""
    ax.legend(fontsize=fontsize, loc="center left", bbox_to_anchor=(1.02, 0.5))
