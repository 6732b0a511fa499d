"""Aggregate the workflow's run records into CSV, Markdown/LaTeX tables and figures.

    python workflow/scripts/report.py --results results/demo --figures figures/demo \
        --experiments '{"digits": {"title": "...", "dataset": "digits", "figures": [...]}}' \
        [--published results/published/sosp2022_table1.csv] [--records FILE ...]

Reads the records named by --records (JSON lists written by `sosp evaluate`; by default every
results/<name>/runs/**/*.json), so it re-plots from cached results alone. Writes runs.csv (one
row per network), summary.csv (mean, std and seed count per cell), tables.md / tables.tex and
one PNG per experiment and figure.

Accuracies are in percent; "final" is after the last fine-tuning epoch, "best" the best test
accuracy seen during fine-tuning (selected on the test set, as the paper's Table 1 reports).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from elsewhere
import flow_figures  # noqa: E402 (beside this script)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from plotting import legend_right, save  # noqa: E402 (beside this script)

from sosp.io import atomic_write_text  # noqa: E402

CELL = ["experiment", "model", "dataset", "method", "prune_at", "ratio"]
METRICS = {
    "acc": "final test acc (%)",
    "params": "params",
    "best_acc": "best test acc (%)",
    "acc_before_ft": "acc before fine-tuning (%)",
    "params_removed": "params removed (%)",
    "macs_removed": "MACs removed (%)",
    "macs_ccp_removed": "ccp MACs removed (%)",  # with mac_conventions: [ccp]
    "mask_seconds": "mask seconds",
}
# With a latency table (an experiment's `latency` block), each pruned network's latency: as
# `sosp prune` measured it, timed in turn with the dense network on the table's setup, and as
# the table predicted it. Its columns are in runs.csv and summary.csv only where a record has
# one, so a config without latency keeps its tables as they were.
LATENCY_METRICS = {
    "latency_removed": "measured latency removed (%)",
    "speedup_measured": "measured speed-up (x)",
    "latency_predicted_removed": "predicted latency removed (%)",
}


def flatten(record: dict) -> dict:
    """One CSV row from one record of `sosp evaluate`."""
    prune = record.get("prune") or {}
    before = prune.get("before") or record.get("dense_counts", {})  # pruned in rounds: no report
    rounds = record.get("rounds") or {}
    row = {
        "experiment": record["experiment"],
        "model": record["model"],
        "dataset": record["dataset"],
        "method": _method_label(record, prune),
        "prune_at": record.get("prune_at", "trained"),
        "seed": int(record["seed"]),
        "ratio": float(prune.get("ratio", rounds.get("target", 0.0))),
        "budget": prune.get("budget", rounds.get("settings", {}).get("budget")),
        "acc": 100 * record["test_acc"],
        "best_acc": _pct(record.get("best_test_acc_selected_on_test")),
        "acc_before_ft": _pct(record.get("test_acc_before_finetune")),
        "params": record["params"],
        "macs": record["macs"],
        "params_removed": 100 * (1 - record["params"] / before["params"]) if before else 0.0,
        "macs_removed": 100 * (1 - record["macs"] / before["macs"]) if before else 0.0,
        # the ccp count of the dense network is its actual count: nothing is pruned
        "macs_ccp_removed": (
            None
            if "macs_ccp" not in record
            else 100 * (1 - record["macs_ccp"] / before["macs"])
            if before
            else 0.0
        ),
        "mask_seconds": prune.get("seconds"),
        "bn_recalibrated": bool(prune.get("bn_recalibration")),
        "checkpoint": record["checkpoint"],
    }
    return row | _latency(prune.get("latency"))


def _latency(measured: dict | None) -> dict:
    """The runs.csv columns of a prune report's `latency` (none without one): removed
    fractions in percent, times in ms, and the setup it was measured on in words."""
    if not measured:
        return {}
    on = measured["measured_on"]
    return {
        "latency_removed": 100 * measured["measured_removed"],
        "speedup_measured": measured["speedup_measured"],
        "latency_predicted_removed": 100 * measured["predicted_removed"],
        "latency_requested_removed": _pct(measured["requested_removed"]),
        "measured_ms": measured["measured_ms"],
        "dense_ms": measured["dense_ms"],
        "predicted_ms": measured["predicted_ms"],
        "dense_table_ms": measured["dense_table_ms"],
        "speedup_predicted": measured["speedup_predicted"],
        "latency_on": f"{on['device_name']}; {on['precision']} {on['layout']}, batch {on['batch']}",
    }


def _method_label(record: dict, prune: dict) -> str:
    """The method as tables and figures name it: with kernel scaling `<method>_kernel_scaled`,
    with the shuffle control `..._shuffled`, on an expand-pruning variant's network
    `..._<variant>` (expanded, widened1.1)."""
    label = record["method"] + ("_kernel_scaled" if prune.get("kernel_scaling") else "")
    label += "_shuffled" if prune.get("shuffle_within_layers") else ""
    return label + (f"_{record['variant']}" if record.get("variant") else "")


def _pct(x):
    return None if x is None else 100 * x


def read_records(paths: list[Path]) -> list[dict]:
    """Every record of the JSON lists `sosp evaluate` wrote at `paths`, read once."""
    return [record for path in paths for record in json.loads(path.read_text())]


def load_records(paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`frames` of the records at `paths`."""
    return frames(read_records(paths))


def frames(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per network, one row per (network, layer) with its pruned fraction)."""
    rows, layers = [], []
    for record in records:
        row = flatten(record)
        rows.append(row)
        for i, (layer, frac) in enumerate(record.get("layer_pruned_fraction", {}).items()):
            layers.append({**{k: row[k] for k in CELL + ["seed"]}, "layer": layer,
                           "index": i, "pruned": 100 * frac})  # fmt: skip
    if not rows:
        raise SystemExit("no records to report: run the workflow first")
    return pd.DataFrame(rows), pd.DataFrame(layers)


def metrics(columns) -> dict[str, str]:
    """METRICS, and the LATENCY_METRICS among `columns` (a frame's columns: runs.csv's
    metric names, or summary.csv's `<metric>_mean`), each with its table label."""
    present = {c.removesuffix("_mean") for c in columns}
    return METRICS | {m: label for m, label in LATENCY_METRICS.items() if m in present}


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and seed count of every metric per cell, and the best final accuracy of its
    seeds (`acc_max`, the convention of the paper's Table 2)."""
    cells = runs.groupby(CELL, dropna=False)
    agg = cells[list(metrics(runs.columns))].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["acc_max"] = cells["acc"].max()
    agg["seeds"] = cells["seed"].nunique()
    return agg.reset_index()


def _cell(mean, std, digits=2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def latex(df: pd.DataFrame, caption: str) -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    lines = [r"\begin{table}", r"\centering", rf"\caption{{{esc(caption)}}}"]
    lines += [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule"]
    lines += [" & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def cell_table(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    s = summary[summary.experiment == experiment].sort_values(["model", "method", "ratio"])
    out = pd.DataFrame(
        {
            "model": s.model,
            "method": s.method,
            "prune at": s.prune_at,
            "ratio": s.ratio.map(lambda r: f"{r:g}"),
            "seeds": s.seeds,
        }
    )
    for m, label in metrics(s.columns).items():
        out[label] = [_cell(a, b) for a, b in zip(s[f"{m}_mean"], s[f"{m}_std"], strict=True)]
    return out.loc[:, (out != "").any()]  # no column that is empty throughout


def recalibration_note(runs: pd.DataFrame) -> list[str]:
    """A line saying which networks were pruned after re-estimating BN statistics (pruning at
    initialization), or nothing."""
    done = runs[runs.bn_recalibrated]
    if done.empty:
        return []
    where = ", ".join(sorted(set(done.prune_at)))
    return [
        f"BatchNorm running statistics were re-estimated on the pruning samples before the "
        f"saliencies of {len(done)} of {len(runs)} networks (prune at: {where}).",
        "",
    ]


# A published table's columns as Table 1's CSV names them (Table 2's CSV names them otherwise).
PUBLISHED_COLUMNS = {"top1": "test_acc", "params_reduction_pct": "weights_reduction_pct"}


def published_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Each published cell beside ours: our ratio whose params reduction is nearest to the
    published one, our accuracy by the table's convention (Table 1: the mean and std of the
    best accuracy during fine-tuning; Table 2, which gives top-1 without a std: the best
    final accuracy of the seeds) and seed count; for Table 2 the alternative MAC count too."""
    best_final = "top1" in published.columns
    published = published.rename(columns=PUBLISHED_COLUMNS)
    if "test_acc_std" not in published.columns:
        published["test_acc_std"] = float("nan")
    rows = []
    for p in published.itertuples(index=False):
        if p.method == "baseline":
            ours = summary[(summary.model == p.model) & (summary.dataset == p.dataset)
                           & (summary.method == "dense")]  # fmt: skip
        else:
            ours = summary[(summary.model == p.model) & (summary.dataset == p.dataset)
                           & (summary.method == p.method)]  # fmt: skip
        if ours.empty:
            continue
        target = getattr(p, "weights_reduction_pct", float("nan"))
        if p.method != "baseline" and not math.isnan(target):
            ours = ours.iloc[[(ours.params_removed_mean - target).abs().argmin()]]
        o = ours.iloc[0]
        if best_final:
            acc, acc_std = o.acc_max, None
        else:
            acc = o.best_acc_mean if p.method != "baseline" else o.acc_mean
            acc_std = o.best_acc_std if p.method != "baseline" else o.acc_std
        rows.append(
            {
                "source": p.source,
                "model": p.model,
                "dataset": p.dataset,
                "method": p.method,
                "published acc": _cell(p.test_acc, p.test_acc_std),
                "our acc": _cell(acc, acc_std),
                "difference": f"{acc - p.test_acc:+.2f}",
                "our seeds": int(o.seeds),
                "published params removed": _cell(p.weights_reduction_pct, None),
                "our params removed": _cell(o.params_removed_mean, o.params_removed_std),
                "published MACs removed": _cell(p.macs_reduction_pct, None),
                "our MACs removed": _cell(o.macs_removed_mean, o.macs_removed_std),
                "published alt. MACs removed": _cell(
                    getattr(p, "alt_macs_reduction_pct", None), None
                ),
                "our ccp MACs removed": _cell(o.macs_ccp_removed_mean, o.macs_ccp_removed_std),
            }
        )
    table = pd.DataFrame(rows)
    return table.loc[:, (table != "").any()] if not table.empty else table


# -- figures ---------------------------------------------------------------------------------


def _models_axes(models: list[str], title: str):
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False)
    fig.suptitle(textwrap.fill(title, 55 * len(models), break_on_hyphens=False), fontsize=10)
    return fig, axes[0]


def _dense_line(ax, summary, experiment, model):
    dense = summary[(summary.experiment == experiment) & (summary.model == model)
                    & (summary.method == "dense")]  # fmt: skip
    if not dense.empty:
        ax.axhline(dense.acc_mean.iloc[0], color="k", ls="--", lw=1, label="dense")


def _line_label(frame: pd.DataFrame, method: str, prune_at: str) -> str:
    """The legend entry of one method's line: with the pruning time where the figure has both."""
    return method if frame.prune_at.nunique() == 1 else f"{method} ({prune_at})"


# The x axis of each accuracy figure: (our summary's removed-% column, its label).
QUANTITIES = {
    "params": ("params_removed", "remaining parameters (%)"),
    # absolute parameters: networks of different widths on one axis (expand-pruning, Fig. 3)
    "param_count": ("params", "parameters"),
    "macs": ("macs_removed", "remaining MACs (%)"),
    "ccp_macs": ("macs_ccp_removed", "remaining MACs, CCP's alternative count (%)"),
}
# Published methods whose MAC reductions are in CCP's own convention, not ours (the paper's
# App. D): plotted on the ccp_macs axis only.
CCP_COUNTED = {"ccp"}
SOSP_ROWS = {"baseline", "sosp_h", "sosp_i", "sosp_h_kernel_scaled"}


def published_points(published: pd.DataFrame, model: str, dataset: str, quantity: str):
    """(method, remaining %, accuracy %) of the other methods' published cells for `model` on
    `dataset` on the `quantity` axis (the SOSP paper's own rows are our curves' to match)."""
    rows = published[(published.model == model) & (published.dataset == dataset)
                     & ~published.method.isin(SOSP_ROWS)]  # fmt: skip
    points = []
    for p in rows.itertuples(index=False):
        if quantity == "params":
            removed = getattr(p, "weights_reduction_pct", float("nan"))
        elif quantity == "macs":
            removed = float("nan") if p.method in CCP_COUNTED else p.macs_reduction_pct
        else:
            removed = getattr(p, "alt_macs_reduction_pct", float("nan"))
            if p.method in CCP_COUNTED and math.isnan(removed):
                removed = p.macs_reduction_pct
        if not math.isnan(removed) and not math.isnan(p.test_acc):
            points.append((p.method, 100 - removed, p.test_acc))
    return points


def accuracy_vs(summary, experiment, title, quantity: str, path: Path, published=None) -> None:
    """Final accuracy (mean ± std over seeds) against the remaining params or MACs (`quantity`,
    a key of QUANTITIES), with the other methods' published cells as labelled points."""
    column, xlabel = QUANTITIES[quantity]
    absolute = quantity == "param_count"
    s = summary[(summary.experiment == experiment) & ~summary.method.str.startswith("dense")]
    models = sorted(s.model.unique())
    fig, axes = _models_axes(models, title)
    for ax, model in zip(axes, models, strict=True):
        for (method, prune_at), g in s[s.model == model].groupby(["method", "prune_at"]):
            g = g.sort_values("ratio")
            x = g[f"{column}_mean"] if absolute else 100 - g[f"{column}_mean"]
            label = _line_label(s, method, prune_at)
            line = ax.plot(x, g.acc_mean, "o-", ms=3, label=label)[0]
            std = g.acc_std.fillna(0)
            ax.fill_between(x, g.acc_mean - std, g.acc_mean + std, alpha=0.15,
                            color=line.get_color())  # fmt: skip
        dataset = s[s.model == model].dataset.iloc[0]
        if published is not None:
            for method, x, acc in published_points(published, model, dataset, quantity):
                ax.plot(x, acc, "kx", ms=5)
                ax.annotate(method, (x, acc), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        if absolute:  # every dense network (standard, expanded, widened) as a star
            dense = summary[(summary.experiment == experiment) & (summary.model == model)
                            & summary.method.str.startswith("dense")]  # fmt: skip
            for d in dense.itertuples(index=False):
                ax.plot(d.params_mean, d.acc_mean, "*", ms=8, label=d.method)
            ax.set_xscale("log")  # pruned and widened networks span orders of magnitude
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e3:g}k"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            _dense_line(ax, summary, experiment, model)
            ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


def read_published(paths: list[Path]) -> pd.DataFrame | None:
    """Every published CSV in one frame, with Table 1's column names (`PUBLISHED_COLUMNS`)."""
    frames = [pd.read_csv(path).rename(columns=PUBLISHED_COLUMNS) for path in paths]
    return pd.concat(frames, ignore_index=True) if frames else None


def layerwise(layers, summary, experiment, title, path: Path) -> None:
    """Pruned fraction of each layer (mean over seeds) at the largest ratio, per method."""
    s = layers[(layers.experiment == experiment)]
    models = sorted(s.model.unique())
    fig, axes = _models_axes(models, title + " — layer-wise pruning at the largest ratio")
    for ax, model in zip(axes, models, strict=True):
        m = s[s.model == model]
        top = m[m.ratio == m.ratio.max()]
        for (method, prune_at), g in top.groupby(["method", "prune_at"]):
            mean = g.groupby("index").pruned.mean()
            label = _line_label(s, method, prune_at)
            ax.plot(mean.index, mean.values, ".-", ms=4, lw=1, label=label)
        ax.set_xlabel("layer (network order)")
        ax.set_ylabel("channels pruned (%)")
        ax.set_title(f"{model}, ratio {top.ratio.max():g}", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


def before_after(summary, experiment, title, path: Path) -> None:
    """Accuracy right after pruning (dashed) and after fine-tuning (solid) against the ratio."""
    s = summary[(summary.experiment == experiment) & (summary.method != "dense")]
    models = sorted(s.model.unique())
    fig, axes = _models_axes(models, title + " — before (dashed) and after (solid) fine-tuning")
    for ax, model in zip(axes, models, strict=True):
        for (method, prune_at), g in s[s.model == model].groupby(["method", "prune_at"]):
            g = g.sort_values("ratio")
            label = _line_label(s, method, prune_at)
            line = ax.plot(g.ratio, g.acc_mean, "o-", ms=3, label=label)[0]
            ax.plot(g.ratio, g.acc_before_ft_mean, "o--", ms=3, color=line.get_color(), alpha=0.7)
        _dense_line(ax, summary, experiment, model)
        ax.set_xlabel(f"pruning ratio ({s.budget.iloc[0] if 'budget' in s else 'structures'})")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(model, fontsize=9)
        ax.grid(alpha=0.3)
    legend_right(axes[-1])
    save(fig, path)


# Names as the latency figure writes them; a colour per method, a line per budget (the
# latency budget's solid with filled markers, the others' dotted with open ones).
METHOD_NAMES = {"sosp_h": "SOSP-H", "sosp_i": "SOSP-I"}
BUDGET_NAMES = {"latency": "latency", "macs": "MAC", "params": "parameter", "structures": "channel"}
BUDGET_STYLES = {"latency": "o-", "macs": "s:", "params": "^:", "structures": "D:"}
COLORS = plt.get_cmap("tab10").colors


def accuracy_vs_latency(summary, experiment, title, path: Path, beside=()) -> None:
    """Test accuracy after (top row) and before (bottom row) fine-tuning against the pruned
    network's measured latency (% of the dense network's, both timed in turn by `sosp prune` on
    the latency table's setup), one column per model: a line per method and budget, of
    `experiment` and of the experiments it is drawn `beside` (e.g. the same networks pruned
    with a MAC budget), each point the mean over seeds with its std both ways."""
    names = [experiment, *beside]
    s = summary[summary.experiment.isin(names) & (summary.method != "dense")]
    if "latency_removed_mean" not in s.columns or s.latency_removed_mean.isna().all():
        raise SystemExit(
            f"accuracy_vs_latency of {experiment}: no record has a measured latency; give the "
            "experiment a `latency` block, whose table every prune job then measures with"
        )
    s = s[s.latency_removed_mean.notna()]
    models = sorted(s.model.unique())
    fig, axes = plt.subplots(
        2, len(models), figsize=(4.6 * len(models), 6.4), squeeze=False, sharex="col"
    )
    on = s["latency_on"].dropna() if "latency_on" in s.columns else pd.Series(dtype=str)
    measured = f"\nmeasured on {on.iloc[0]}" if len(on) else ""
    fig.suptitle(f"{title} — accuracy against measured latency{measured}", fontsize=10)
    keys = ["method", "budget", "experiment", "prune_at"]
    groups = sorted(s.groupby(keys).groups)
    methods = sorted({g[0] for g in groups})
    one_each = len({g[:2] for g in groups}) == len(groups)  # else the experiment names them
    for column, model in enumerate(models):
        for (method, budget, exp, prune_at), g in s[s.model == model].groupby(keys):
            g = g.sort_values("ratio")  # in the budget's order: noisy timings may cross
            color = COLORS[methods.index(method) % len(COLORS)]
            label = f"{METHOD_NAMES.get(method, method)}, {BUDGET_NAMES.get(budget, budget)} budget"
            label += "" if one_each else f" ({exp})"
            label += "" if s.prune_at.nunique() == 1 else f", {prune_at}"
            x = 100 - g.latency_removed_mean
            for row, acc in enumerate(("acc", "acc_before_ft")):
                axes[row, column].errorbar(
                    x, g[f"{acc}_mean"], xerr=g.latency_removed_std.fillna(0),
                    yerr=g[f"{acc}_std"].fillna(0), fmt=BUDGET_STYLES.get(budget, "o:"), ms=4,
                    lw=1.2, capsize=2, color=color, label=label,
                    mfc=color if budget == "latency" else "white",
                )  # fmt: skip
        for row, when in enumerate(("after fine-tuning", "before fine-tuning")):
            ax = axes[row, column]
            _dense_line(ax, summary, experiment, model)
            ax.set_ylabel(f"test accuracy {when} (%)")
            ax.set_title(f"{model}, {when}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0, column].invert_xaxis()  # (shared: both rows) more latency removed to the right
        axes[1, column].set_xlabel("measured latency (% of the dense network's)")
    legend_right(axes[0, -1])
    save(fig, path)


FLOW_FIGURES = {
    "flow_curves": flow_figures.flow_curves,
    "accuracy_vs_rounds": flow_figures.accuracy_vs_rounds,
    "layerwise_rounds": flow_figures.layerwise_rounds,
    "flow_correlation": flow_figures.flow_correlation,
    "flow_scatter": flow_figures.flow_scatter,
}
FLOW_INPUT = {  # what each reads: the raw records, the summary or the per-layer rows
    "flow_curves": "records",
    "accuracy_vs_rounds": "summary",
    "layerwise_rounds": "layers",
    "flow_correlation": "records",
    "flow_scatter": "records",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--figures", type=Path, required=True)
    p.add_argument("--experiments", required=True, help="JSON: name -> {title, figures[, beside]}")
    p.add_argument("--published", action="append", default=[], type=Path)
    p.add_argument(
        "--records",
        nargs="*",
        type=Path,
        help="the record files to aggregate (the workflow passes its config's); "
        "default: every results/<name>/runs/**/*.json",
    )
    args = p.parse_args()
    experiments = json.loads(args.experiments)

    paths = (
        args.records if args.records is not None else sorted(args.results.rglob("runs/**/*.json"))
    )
    records = read_records(paths)
    runs, layers = frames(records)
    summary = summarize(runs)
    shared = ["budget"] + (["latency_on"] if "latency_on" in runs.columns else [])
    s = summary.merge(runs.groupby(CELL)[shared].first().reset_index(), on=CELL, how="left")
    atomic_write_text(args.results / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(args.results / "summary.csv", s.to_csv(index=False))

    published = read_published(args.published)
    md = [f"# Results: {args.results.name}", "", __doc__.split("\n\n")[-1].strip(), ""]
    tex = []
    for name, spec in experiments.items():
        table = cell_table(s, name)
        md += [f"## {spec['title']}", "", markdown(table), ""]
        md += recalibration_note(runs[runs.experiment == name])
        tex += [latex(table, spec["title"]), ""]
        makers = {
            f"accuracy_vs_{q}": lambda n=name, t=spec["title"], q=q: accuracy_vs(
                s, n, t, q, args.figures / f"{n}_accuracy_vs_{q}.png", published
            )
            for q in QUANTITIES
        }
        makers |= {
            "layerwise": lambda n=name, t=spec["title"]: layerwise(
                layers, s, n, t, args.figures / f"{n}_layerwise.png"
            ),
            "before_after": lambda n=name, t=spec["title"]: before_after(
                s, n, t, args.figures / f"{n}_before_after.png"
            ),
            "accuracy_vs_latency": lambda n=name, sp=spec: accuracy_vs_latency(
                s,
                n,
                sp["title"],
                args.figures / f"{n}_accuracy_vs_latency.png",
                sp.get("beside", ()),
            ),  # fmt: skip
        }
        makers |= {  # Lubana & Dick's gradient-flow study (flow_figures.py)
            figure: lambda n=name, t=spec["title"], f=figure: FLOW_FIGURES[f](
                {"records": records, "summary": s, "layers": layers}[FLOW_INPUT[f]],
                n,
                t,
                args.figures / f"{n}_{f}.png",
            )  # fmt: skip
            for figure in FLOW_FIGURES
        }
        for figure in spec["figures"]:
            makers[figure]()
    for path in args.published:
        compared = published_table(s, pd.read_csv(path))
        md += [f"## Beside the published numbers ({path.name})", ""]
        md += [markdown(compared) if not compared.empty else "(no matching cells yet)", ""]
        if not compared.empty:
            tex += [latex(compared, f"Ours beside {path.name}"), ""]
    atomic_write_text(args.results / "tables.md", "\n".join(md))
    atomic_write_text(args.results / "tables.tex", "\n".join(tex))
    print(f"{len(runs)} networks in {len(s)} cells -> {args.results}/, {args.figures}/")


if __name__ == "__main__":
    main()
