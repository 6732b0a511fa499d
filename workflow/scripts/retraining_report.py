"""The retraining study's table and figures, from the counts files of its runs.

    python workflow/scripts/retraining_report.py --spec results/demo/retraining/jobs.json \
        --results results/demo/retraining --figures figures/demo [--from-csv]

--spec (written by workflow/rules/retraining.smk) names every run's labels and its counts
file (sparsity.json of `sosp retrain`). Writes runs.csv (one row per run: labels, final test
accuracy in %, sparsity, speed-up, accuracy right after each pruning) and layers.csv (each
layer's sparsity), then each experiment's figures; --from-csv re-plots from those CSVs alone.
Bands are the min-max over seeds around the mean, as the paper's figures draw them.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from elsewhere
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from plotting import legend_right, save  # noqa: E402 (beside this script)

from sosp.io import atomic_write_text  # noqa: E402

SETTING = ["method", "allocation", "schedule", "budget", "cycles", "weight_decay"]
CELL = ["experiment", "model", "sparsity_target", *SETTING]
LABELS = {"uniform_plus": "uniform+"}


def load(spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run, one row per (run, layer))."""
    rows, layers = [], []
    for run in spec["runs"]:
        counts = json.loads(Path(run["counts"]).read_text())
        before = json.loads(Path(run["before"]).read_text()) if run.get("before") else None
        pruned = [p["acc"] for p in counts["prunings"] if p.get("acc") is not None]
        row = {
            **{k: run.get(k) for k in ("experiment", "model", "dataset", "seed", *SETTING)},
            "sparsity_target": run.get("sparsity") or run.get("stable_setting"),
            "acc": 100 * counts["final_test_acc"],
            "acc_after_pruning": 100 * pruned[-1] if pruned else None,
            "acc_before_retraining": 100 * before["final_test_acc"] if before else None,
            "sparsity": 100 * counts["sparsity"],
            "speedup": counts["speedup"],
            "nonzero_params": counts["nonzero_params"],
            "key": run["key"],
        }
        rows.append(row)
        for i, (layer, s) in enumerate(counts["layer_sparsity"].items()):
            layers.append({**row, "layer": layer, "index": i, "layer_sparsity": 100 * s})
    return pd.DataFrame(rows), pd.DataFrame(layers)


def label(g: dict) -> str:
    """A line's legend: what varies among the experiment's IMP runs, or the method."""
    if g["method"] != "imp":
        return str(g["method"]).upper()
    parts = [str(g["schedule"]).upper(), LABELS.get(g["allocation"], g["allocation"])]
    parts.append("One Shot" if g["cycles"] == 1 else f"{g['cycles']} cycles")
    parts.append(f"{g['budget']} ep")
    if pd.notna(g.get("weight_decay")):
        parts.append(f"wd {g['weight_decay']:g}")
    return ", ".join(parts)


def _varying(frame: pd.DataFrame) -> list[str]:
    return [c for c in SETTING if frame[c].nunique(dropna=False) > 1]


def _band(ax, x, frame, y, **kw):
    """Mean line with the min-max band over seeds."""
    line = ax.plot(x, frame[(y, "mean")], "o-", ms=3, **kw)[0]
    ax.fill_between(x, frame[(y, "min")], frame[(y, "max")], alpha=0.15, color=line.get_color())


def _panels(runs: pd.DataFrame, title: str):
    models = sorted(runs.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), squeeze=False)
    fig.suptitle(textwrap.fill(title, 55 * len(models)), fontsize=10)
    return zip(models, axes[0], strict=True), fig, axes[0]


def accuracy_vs(runs, title, x: str, path: Path) -> None:
    """Final accuracy against sparsity (or theoretical speed-up), one line per setting."""
    imp = runs[runs.method == "imp"]
    panels, fig, axes = _panels(imp, title)
    for model, ax in panels:
        m = imp[imp.model == model]
        for _, g in m.groupby(SETTING, dropna=False):
            agg = g.groupby("sparsity_target").agg({"acc": ["mean", "min", "max"], x: "mean"})
            _band(ax, agg[(x, "mean")], agg, "acc", label=label(g.iloc[0]))
        ax.set_xlabel("sparsity (%)" if x == "sparsity" else "theoretical speed-up")
        if x == "speedup":  # log axis: labels at 1, 2, 5 x 10^k only, written as speed-ups
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[-1], 6)
    save(fig, path)


def accuracy_vs_budget(runs, title, path: Path) -> None:
    """Final accuracy against the total retraining epochs, per schedule, one panel per sparsity
    (first model)."""
    imp = runs[(runs.method == "imp") & (runs.model == sorted(runs.model.unique())[0])]
    sparsities = sorted(imp.sparsity_target.unique())
    fig, axes = plt.subplots(1, len(sparsities), figsize=(4.6 * len(sparsities), 3.6),
                             squeeze=False)  # fmt: skip
    fig.suptitle(textwrap.fill(f"{title} ({imp.model.iloc[0]})", 50 * len(sparsities)), fontsize=10)
    keys = [c for c in SETTING if c != "budget"]
    for s, ax in zip(sparsities, axes[0], strict=True):
        for _, g in imp[imp.sparsity_target == s].groupby(keys, dropna=False):
            agg = g.groupby("budget").agg({"acc": ["mean", "min", "max"]})
            name = label({**g.iloc[0].to_dict(), "budget": "*"}).replace(", * ep", "")
            _band(ax, agg.index, agg, "acc", label=name)
        ax.set_xlabel("retraining epochs in all")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"sparsity {s:g}", fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[0][-1], 6)
    save(fig, path)


def layer_sparsity(layers, title, path: Path) -> None:
    """Each layer's sparsity (mean over seeds) at the highest sparsity, per setting: a layer at
    100% has collapsed (the network's output no longer depends on its input)."""
    imp = layers[layers.method == "imp"]
    panels, fig, axes = _panels(imp, title + " — layer-wise sparsity at the highest sparsity")
    for model, ax in panels:
        m = imp[imp.model == model]
        top = m[m.sparsity_target == m.sparsity_target.max()]
        for _, g in top.groupby(SETTING, dropna=False):
            mean = g.groupby("index").layer_sparsity.mean()
            ax.plot(mean.index, mean.values, ".-", ms=4, lw=1, label=label(g.iloc[0]))
        ax.axhline(100, color="k", lw=0.8, ls=":")
        ax.set_xlabel("layer (network order)")
        ax.set_ylabel("weights pruned (%)")
        ax.set_title(f"{model}, sparsity {top.sparsity_target.max():g}", fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[-1], 6)
    save(fig, path)


def stable(runs, title, path: Path) -> None:
    """Pruning-stable methods: accuracy after training (x) and after FT retraining (o) against
    the sparsity reached, beside IMP's FT One Shot runs."""
    panels, fig, axes = _panels(runs, title)
    for model, ax in panels:
        m = runs[runs.model == model]
        for method, g in m[m.method != "imp"].groupby("method"):
            agg = g.groupby("sparsity_target").agg(
                {"acc": ["mean", "min", "max"], "acc_before_retraining": "mean", "sparsity": "mean"}
            )
            x = agg[("sparsity", "mean")]
            _band(ax, x, agg, "acc", label=f"{method.upper()} + FT")
            ax.plot(x, agg[("acc_before_retraining", "mean")], "x--", label=f"{method.upper()}")
        one_shot = m[(m.method == "imp") & (m.cycles == 1) & (m.schedule == "ft")]
        if not one_shot.empty:
            agg = one_shot.groupby("sparsity_target").agg({"acc": ["mean", "min", "max"],
                                                          "sparsity": "mean"})  # fmt: skip
            _band(ax, agg[("sparsity", "mean")], agg, "acc", label="IMP (FT, One Shot)")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[-1], 6)
    save(fig, path)


# figure name -> (runs, layers, title, path) -> None; the config schema's figure enum
FIGURES = {
    "accuracy_vs_sparsity": lambda r, la, t, p: accuracy_vs(r, t, "sparsity", p),
    "accuracy_vs_speedup": lambda r, la, t, p: accuracy_vs(r, t, "speedup", p),
    "accuracy_vs_budget": lambda r, la, t, p: accuracy_vs_budget(r, t, p),
    "layer_sparsity": lambda r, la, t, p: layer_sparsity(la, t, p),
    "stable": lambda r, la, t, p: stable(r, t, p),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spec", type=Path, required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--figures", type=Path, required=True)
    p.add_argument("--from-csv", action="store_true", help="re-plot from runs.csv, layers.csv")
    args = p.parse_args()
    spec = json.loads(args.spec.read_text())
    if args.from_csv:
        runs = pd.read_csv(args.results / "runs.csv")
        layers = pd.read_csv(args.results / "layers.csv")
    else:
        runs, layers = load(spec)
        atomic_write_text(args.results / "runs.csv", runs.to_csv(index=False))
        atomic_write_text(args.results / "layers.csv", layers.to_csv(index=False))
    for name, exp in spec["experiments"].items():
        r, la = runs[runs.experiment == name], layers[layers.experiment == name]
        for figure in exp["figures"]:
            path = args.figures / f"retraining_{name}_{figure}.png"
            FIGURES[figure](r, la, exp["title"], path)
    print(f"{len(runs)} runs -> {args.results}/, {args.figures}/")


if __name__ == "__main__":
    main()
