"""The figures of Lubana & Dick's gradient-flow study, from the records of `sosp evaluate`
(runs pruned in rounds during training: prune_at "rounds<R>", with their per-epoch `curve`;
dense runs measured during training: their `flow`):

    flow_curves         train (dashed) and test (solid) accuracy per epoch, per method (Fig. 1)
    accuracy_vs_rounds  final test accuracy against the number of rounds (Figs. 4-12)
    layerwise_rounds    pruned fraction of each layer per method, one panel per rounds (16-17)
    flow_correlation    correlation of theta.Hg with theta.g and of |theta.Delta theta| with
                        loss preservation, and the early-bird mask distance, per epoch (Fig. 2)
    flow_scatter        theta.Hg against theta.g per filter at each measured epoch (Figs. 3, 13-15)

Means and spreads are over seeds (std as bars or bands); scatter plots show the first seed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullFormatter
from plotting import legend_right, save


def _records(records: list[dict], experiment: str) -> list[dict]:
    return [r for r in records if r["experiment"] == experiment]


def _rounds_of(record: dict) -> int | None:
    at = str(record.get("prune_at", ""))
    return int(at.removeprefix("rounds")) if at.startswith("rounds") else None


def _grid(n: int, title: str, width: float = 4.2, height: float = 3.2):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    fig.suptitle(textwrap.fill(title, 45 * cols), fontsize=10)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def flow_curves(records: list[dict], experiment: str, title: str, path: Path) -> None:
    """Per (model, rounds) at the largest ratio: mean test (solid) and train (dashed)
    accuracy per epoch of each method over seeds."""
    runs = [r for r in _records(records, experiment) if _rounds_of(r) and r.get("curve")]
    rows = [
        {"model": r["model"], "rounds": _rounds_of(r), "method": r["method"], "seed": r["seed"],
         "ratio": r["rounds"]["target"], **point}
        for r in runs for point in r["curve"]
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    panels = sorted({(m, k) for m, k in zip(frame.model, frame.rounds, strict=True)})
    fig, axes = _grid(len(panels), title + " — accuracy while pruning in rounds")
    for ax, (model, rounds) in zip(axes, panels, strict=True):
        f = frame[(frame.model == model) & (frame.rounds == rounds)]
        f = f[f.ratio == f.ratio.max()]
        for method, g in f.groupby("method"):
            mean = g.groupby("epoch")[["train_acc", "test_acc"]].mean() * 100
            line = ax.plot(mean.index, mean.test_acc, lw=1.2, label=method)[0]
            ax.plot(mean.index, mean.train_acc, "--", lw=0.8, color=line.get_color())
        ax.axvspan(0.5, rounds + 0.5, color="0.9", zorder=0)  # the pruning rounds
        ax.set_title(f"{model}, {rounds} rounds, ratio {f.ratio.max():g}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


def accuracy_vs_rounds(summary: pd.DataFrame, experiment: str, title: str, path: Path):
    """Final test accuracy (mean ± std over seeds) against the number of rounds, per method,
    one panel per (model, ratio)."""
    s = summary[(summary.experiment == experiment) & summary.prune_at.str.startswith("rounds")]
    s = s.assign(rounds=s.prune_at.str.removeprefix("rounds").astype(int))
    panels = sorted({(m, r) for m, r in zip(s.model, s.ratio, strict=True)})
    fig, axes = _grid(len(panels), title + " — final accuracy against rounds")
    for ax, (model, ratio) in zip(axes, panels, strict=True):
        f = s[(s.model == model) & (s.ratio == ratio)]
        for method, g in f.groupby("method"):
            g = g.sort_values("rounds")
            ax.errorbar(g.rounds, g.acc_mean, yerr=g.acc_std.fillna(0), marker="o", ms=3,
                        capsize=2, label=method)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks(sorted(f.rounds.unique()), [str(r) for r in sorted(f.rounds.unique())])
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the rounds run are labelled
        ax.set_title(f"{model}, ratio {ratio:g}", fontsize=9)
        ax.set_xlabel("pruning rounds")
        ax.set_ylabel("final test accuracy (%)")
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


def layerwise_rounds(layers: pd.DataFrame, experiment: str, title: str, path: Path):
    """Pruned fraction of each layer (mean over seeds) per method at the largest ratio, one
    panel per (model, rounds)."""
    s = layers[(layers.experiment == experiment) & layers.prune_at.str.startswith("rounds")]
    panels = sorted({(m, p) for m, p in zip(s.model, s.prune_at, strict=True)},
                    key=lambda mp: (mp[0], int(mp[1].removeprefix("rounds"))))  # fmt: skip
    fig, axes = _grid(len(panels), title + " — layer-wise pruning ratios")
    for ax, (model, prune_at) in zip(axes, panels, strict=True):
        f = s[(s.model == model) & (s.prune_at == prune_at)]
        f = f[f.ratio == f.ratio.max()]
        for method, g in f.groupby("method"):
            mean = g.groupby("index").pruned.mean()
            ax.plot(mean.index, mean.values, ".-", ms=4, lw=1, label=method)
        rounds = prune_at.removeprefix("rounds")
        ax.set_title(f"{model}, {rounds} rounds, ratio {f.ratio.max():g}", fontsize=9)
        ax.set_xlabel("layer (network order)")
        ax.set_ylabel("filters pruned (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


def _probe_rows(records: list[dict], experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per (model, seed, probed epoch) with its correlations, one row per (model,
    seed, epoch) with its mask distance)."""
    probes, distances = [], []
    for r in _records(records, experiment):
        flow = r.get("flow")
        if not flow:
            continue
        for p in flow["probes"]:
            row = {"model": r["model"], "seed": r["seed"], "epoch": p["epoch"]}
            for pair, values in p["correlation"].items():
                row |= {f"{pair}_{kind}": v for kind, v in values.items()}
            probes.append(row)
        for d in flow["mask_distances"]:
            distances.append({"model": r["model"], "seed": r["seed"], **d})
    return pd.DataFrame(probes), pd.DataFrame(distances)


def flow_correlation(records: list[dict], experiment: str, title: str, path: Path) -> None:
    """Per model: the Pearson correlation of theta.Hg with theta.g, the Spearman correlation
    of |theta.Delta theta| with loss preservation (mean ± std over seeds) per measured epoch,
    and the early-bird mask distance per epoch (right axis)."""
    probes, distances = _probe_rows(records, experiment)
    models = sorted(probes.model.unique())
    fig, axes = _grid(len(models), title + " — correlations and mask distance during training")
    for ax, model in zip(axes, models, strict=True):
        p = probes[probes.model == model]
        for column, label in (
            ("hg_vs_g_pearson", "θᵀHg vs θᵀg (Pearson)"),
            ("dtheta_vs_loss_preservation_spearman", "|θᵀΔθ| vs loss pres. (Spearman)"),
        ):
            if column in p:
                stats = p.groupby("epoch")[column].agg(["mean", "std"]).dropna(subset=["mean"])
                ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                            ms=3, capsize=2, label=label)  # fmt: skip
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("epoch")
        ax.set_ylabel("correlation")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
        d = distances[distances.model == model]
        if not d.empty:
            twin = ax.twinx()
            mean = d.groupby("epoch").mask_distance.mean()
            twin.plot(mean.index, mean.values, color="0.4", lw=1, label="mask distance (20%)")
            twin.set_ylabel("mask distance", fontsize=8)
            twin.set_ylim(0, max(0.05, 1.1 * mean.max()))
            lines = ax.get_legend_handles_labels()
            more = twin.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6, loc="lower right")
    save(fig, path)


def flow_scatter(records: list[dict], experiment: str, title: str, path: Path) -> None:
    """theta.Hg against theta.g per filter of the first seed, one row per model and one panel
    per measured epoch; titles give the Pearson correlation averaged over seeds."""
    records = [r for r in _records(records, experiment) if r.get("flow")]
    models = sorted({r["model"] for r in records})
    epochs = sorted({p["epoch"] for r in records for p in r["flow"]["probes"]})
    fig, axes = plt.subplots(
        len(models), len(epochs), figsize=(3.4 * len(epochs), 3.0 * len(models)), squeeze=False
    )
    fig.suptitle(title + " — θᵀHg against θᵀg per filter", fontsize=10)
    for row, model in zip(axes, models, strict=True):
        mine = sorted((r for r in records if r["model"] == model), key=lambda r: r["seed"])
        for ax, epoch in zip(row, epochs, strict=True):
            probes = [p for r in mine for p in r["flow"]["probes"] if p["epoch"] == epoch]
            if not probes:
                ax.set_visible(False)
                continue
            first = probes[0]["filters"]
            g = np.concatenate([v["theta_g"] for v in first.values()])
            hg = np.concatenate([v["theta_hg"] for v in first.values()])
            ax.scatter(g, hg, s=4, alpha=0.5)
            r = np.mean([p["correlation"]["hg_vs_g"]["pearson"] for p in probes])
            ax.set_title(f"{model}, epoch {epoch}: r = {r:.2f} ({len(probes)} seeds)", fontsize=8)
            ax.set_xlabel("θᵀg", fontsize=8)
            ax.set_ylabel("θᵀHg", fontsize=8)
            ax.grid(alpha=0.3)
    save(fig, path)
