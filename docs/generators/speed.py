"""The speed tables: one per CSV in results/benchmarks/, pivoted from the CSV as it is, with
the device and torch version the CSV records and the command that wrote it. A CSV without an
entry in `TABLES` fails the docs build, so every measurement kept is shown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

BENCHMARKS = Path(__file__).resolve().parents[2] / "results" / "benchmarks"
STRUCTURES = ("coupling", "round_to", "scope")  # what a latency row's pruned network is
# columns older CSVs lack, at the value the scripts used before they recorded them
IMPLIED = {"scope": "global", "layout": "nchw", "batchnorm": "kept"}
# mask_time.py's seconds: in all, T_fb, their ratio, and the two largest steps
MASK_TIME = ("seconds", "t_fb", "ratio_to_t_fb", "s_saliency", "s_selection")
# mask_time.py --count-ops: operator calls of T_fb, of each step and of the whole prune
MASK_OPS = (
    "ops_t_fb", "ops_tracing", "ops_counting", "ops_saliency", "ops_selection", "ops_surgery",
    "ops_total",
)  # fmt: skip
LATENCY_CPU = (
    "python benchmarks/latency.py --threads 2 --modes eager --precisions fp32 "
    "--layouts nchw nhwc --batch-sizes 1 64 256"
)


@dataclass(frozen=True)
class Table:
    """How one CSV is shown: `value` per (`rows`) x (`columns`), rows filtered by `where`; or,
    with no `columns`, one column per name in `value` (a tuple). Several CSV rows in one cell
    (runs repeated) are shown side by side, separated by /."""

    title: str
    command: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    value: str | tuple[str, ...]
    where: dict = field(default_factory=dict)
    digits: int = 2


def latency(title: str, command: str, columns=("mode", "precision", "batch"), **kw) -> Table:
    """A `benchmarks/latency.py` CSV: speed-up (dense ms / pruned ms) per pruned network."""
    return Table(title, command, STRUCTURES + kw.pop("rows", ()), columns, "speedup", **kw)


TABLES: dict[str, Table] = {
    "greedy_time_cpu": Table(
        "SOSP-I's greedy of Eq. 4 on a random Q like the library's (~50 layers), seconds "
        "(best of 3) against the number of structures S",
        "python benchmarks/greedy_time.py",
        ("structures",),
        (),
        ("steps", "seconds"),
        digits=3,
    ),
    "mask_time_resnet56_n1000_cpu": Table(
        "Mask time, ResNet-56, N' = 1000",
        "python benchmarks/mask_time.py --n-samples 1000",
        ("method",),
        (),
        MASK_TIME,
    ),
    "mask_time_resnet56_n1000_cuda": Table(
        "Mask time, ResNet-56 at widths 1-4, N' = 1000",
        "bash benchmarks/gpu_check.sh OUT  # FULL=1, step mask_time",
        ("method",),
        ("width",),
        "seconds",
        digits=1,
    ),
    "mask_time_resnet50_n1000_cuda": Table(
        "Mask time, ResNet-50 at 224 px, N' = 1000",
        "bash benchmarks/gpu_check.sh OUT  # step mask_time_imagenet",
        ("method", "label_samples"),
        (),
        MASK_TIME,
    ),
    "mask_ops_resnet56_cpu": Table(
        "ATen operator calls (about one GPU kernel launch each) of T_fb and of each step of the "
        "mask, ResNet-56, N' = 200 in batches of 50",
        "python benchmarks/mask_time.py --widths 1 4 --n-samples 200 --batch-size 50 "
        "--count-ops --image-size 8 --out results/benchmarks/mask_ops_resnet56_cpu "
        "--code CODE --append",
        ("code", "width", "method"),
        (),
        MASK_OPS,
        digits=0,
    ),
    "mask_ops_resnet50_cpu": Table(
        "The same for torchvision's ResNet-50 (SOSP-I with one sampled label), N' = 200 in "
        "batches of 50",
        "python benchmarks/mask_time.py --imagenet --image-size 32 --n-samples 200 "
        "--batch-size 50 --label-samples 1 --count-ops "
        "--out results/benchmarks/mask_ops_resnet50_cpu --code CODE --append",
        ("code", "method"),
        (),
        MASK_OPS,
        digits=0,
    ),
    "vit_speed_cpu": Table(
        "Vision transformers pruned to fewer MACs (heads, MLP units, attention output rows and "
        "patch filters, global ranking; SOSP-I with one sampled label): speed-up over dense, "
        "batch 64, 224 px, fp32",
        "python benchmarks/vit_speed.py --threads 2 --ratios 0.3 0.5",
        ("model", "method"),
        ("ratio",),
        "speedup",
    ),
    "fig2_mask_time_vs_width": Table(
        "The paper's Fig. 2: mask time over the width of ResNet-56, N' = 100",
        "python benchmarks/mask_time.py --widths 1 2 3 4 --n-samples 100",
        ("method",),
        ("width",),
        "seconds",
        digits=1,
    ),
    "train_throughput_cpu": Table(
        "Training throughput, ResNet-56, batch 128 (images/s)",
        "python benchmarks/train_throughput.py",
        ("path",),
        (),
        "images_per_second",
        digits=0,
    ),
    "train_throughput_imagenet_cuda": Table(
        "Training throughput, ResNet-50, bf16, channels_last, batch 256 (images/s), two runs",
        "python benchmarks/train_throughput.py --device cuda --imagenet --images 1000 "
        "--batch-size 256 --workers 14",
        ("run", "path", "cudnn_benchmark"),
        (),
        ("images_per_second", "loader_alone_images_per_second"),
        digits=0,
    ),
    "latency_imagenet_cuda": latency(
        "ResNet-50 at 224 px, 50% fewer MACs by SOSP-H, the paper's global ranking",
        "python benchmarks/latency.py --device cuda --imagenet --modes eager graph "
        "--precisions bf16 fp32 --batch-sizes 1 64 256 --repeats 20 --batchnorm kept folded "
        "--coupling filter stream --round-to none 8",
        rows=("batchnorm",),
    ),
    "latency_imagenet_local_cuda": latency(
        "ResNet-50, the same fraction of every layer (scope local)",
        "bash benchmarks/gpu_check.sh OUT  # step latency_imagenet_local",
        rows=("batchnorm",),
    ),
    "latency_imagenet_aligned_cuda": latency(
        "ResNet-50, channel counts rounded to 32 or 64",
        "bash benchmarks/gpu_check.sh OUT  # step latency_imagenet_aligned",
    ),
    "latency_imagenet_compile_cuda": latency(
        "ResNet-50 under torch.compile, bf16, batch 256",
        "bash benchmarks/gpu_check.sh OUT  # steps latency_imagenet_compile(_aligned)",
        rows=("batchnorm",),
        columns=("batch",),
    ),
    "latency_cuda": latency(
        "ResNet-56, eager",
        "bash benchmarks/gpu_check.sh OUT  # FULL=1, step latency",
    ),
    "latency_compile_cuda": latency(
        "ResNet-56 under torch.compile, fp32",
        "bash benchmarks/gpu_check.sh OUT  # FULL=1, step latency_compile",
    ),
    "latency_cpu": latency(
        "ResNet-56, eager, fp32 and bf16 autocast, NCHW",
        "python benchmarks/latency.py --threads 2 --precisions fp32 bf16 "
        "--batch-sizes 1 64 256 --coupling filter stream --round-to none 8",
    ),
    "latency_cpu_layouts": latency(
        "ResNet-56, eager fp32, NCHW and NHWC",
        f"{LATENCY_CPU} --repeats 15 --coupling filter stream --round-to none 8",
        columns=("layout", "batch"),
    ),
    "latency_cpu_overwrite": latency(
        "ResNet-56 per-filter, eager fp32, sums into the stream's own memory",
        f"{LATENCY_CPU} --repeats 21 --coupling filter --round-to none 8",
        columns=("layout", "batch"),
    ),
    "latency_cpu_local": latency(
        "ResNet-56, eager fp32, the same fraction of every layer (scope local)",
        f"{LATENCY_CPU} --repeats 10 --coupling filter stream --round-to none 8 --scope local",
        columns=("layout", "batch"),
    ),
    "latency_cpu_round16": latency(
        "ResNet-56, coupled streams rounded to 16 channels (AVX-512's fp32 lanes), eager",
        f"{LATENCY_CPU} --repeats 15 --coupling stream --round-to 16",
        columns=("layout", "batch"),
    ),
    "latency_cpu_compile": latency(
        "ResNet-56, eager and compiled with freezing, fp32, NHWC",
        "python benchmarks/latency.py --threads 2 --modes eager compile --freezing "
        "--precisions fp32 --layouts nhwc --batch-sizes 1 64 256 --repeats 15 "
        "--coupling filter stream --round-to none 8 16",
        rows=("macs_removed",),
        columns=("mode", "batch"),
    ),
    "latency_cpu_compile_stream16": latency(
        "ResNet-56, coupled streams rounded to 16, eager and compiled with freezing",
        "python benchmarks/latency.py --threads 2 --modes eager compile --freezing "
        "--precisions fp32 --layouts nchw nhwc --batch-sizes 1 64 256 --repeats 21 "
        "--coupling stream --round-to 16",
        columns=("mode", "layout", "batch"),
    ),
    "layer_latency_cpu": Table(
        "ResNet-56 per conv: speed-up of each stage's convs, all convs, the whole forward",
        "python benchmarks/layer_latency.py --threads 2 --coupling filter stream "
        "--round-to none 8 16 --layouts nchw nhwc --repeats 9",
        ("coupling", "round_to", "layout"),
        ("name",),
        "speedup",
        where={"kind": ["stage", "convs", "forward"]},
    ),
    "channel_steps_cpu_fp32_nhwc": Table(
        "One 3x3 conv at 64x16x32x32 as one channel count falls (time / time at 16)",
        "python benchmarks/channel_steps.py --threads 2 --layout nhwc --repeats 21",
        ("in_channels", "out_channels"),
        ("varied",),
        "ms_per_full",
    ),
    "latency_budget_resnet56_cpu": Table(
        "ResNet-56 by SOSP-H to latency budgets and to MAC budgets, fp32, NHWC, batch 64: "
        "speed-ups asked, predicted by the table, measured for the table's own selection "
        "(table alone) and after measured corrections",
        "python benchmarks/latency_budget.py --threads 2",
        ("coupling", "budget", "ratio"),
        (),
        (
            "speedup_asked",
            "speedup_predicted",
            "speedup_table_alone",
            "speedup_measured",
            "corrections",
            "macs_removed",
        ),
    ),
    "index_add_cpu": Table(
        "Adding a pruned branch into its residual stream (ms, fp32)",
        "python benchmarks/index_add.py --threads 2 --repeats 40",
        ("way",),
        ("layout", "shape"),
        "ms",
    ),
}


def device_of(frame: pd.DataFrame) -> str:
    """What the CSV says it was measured on: device name(s) and torch version(s)."""
    name = next(c for c in ("device_name", "device", "cpu") if c in frame)
    device = ", ".join(sorted(set(frame[name].astype(str)) - {"nan"}))
    if "torch" in frame:
        device += ", torch " + ", ".join(sorted(set(frame["torch"].astype(str))))
    return device


def label(value) -> str:
    """A cell label: NaN -> none (an option not set), floats without a needless .0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def formatted(values: pd.Series, digits: int) -> str:
    """The values of one cell, rounded, separated by / (a repeated run)."""
    return " / ".join(f"{v:,.{digits}f}" for v in values.dropna())


def pivot(frame: pd.DataFrame, t: Table) -> list[str]:
    """The Markdown table of `t` over `frame`: one row per distinct `t.rows`, in CSV order."""
    for column, allowed in t.where.items():
        frame = frame[frame[column].isin(allowed)]
    values = (t.value,) if isinstance(t.value, str) else t.value
    key = lambda row, names: tuple(label(row.get(n, IMPLIED.get(n))) for n in names)  # noqa: E731
    cells: dict = {}
    for _, r in frame.iterrows():
        for v in values:
            column = key(r, t.columns) if t.columns else (v,)
            cells.setdefault(key(r, t.rows), {}).setdefault(column, []).append(r[v])
    cols = list(dict.fromkeys(c for row in cells.values() for c in row))
    head = [", ".join(t.rows)] + [" ".join(c) for c in cols]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * len(cols)]
    for row, by_column in cells.items():
        texts = [formatted(pd.Series(by_column.get(c, []), dtype=float), t.digits) for c in cols]
        out.append("| " + " | ".join([", ".join(row), *texts]) + " |")
    return out


def section(name: str) -> str:
    """The Markdown for results/benchmarks/<name>.csv: title, device, command, table."""
    t = TABLES[name]
    frame = pd.read_csv(BENCHMARKS / f"{name}.csv")
    header = f"**{t.title}** — {device_of(frame)}; `results/benchmarks/{name}.csv`"
    what = f"{t.value} per {', '.join(t.rows)}, columns: {' / '.join(t.columns)}"
    what = what if t.columns else f"per {', '.join(t.rows)}"
    return "\n".join(
        [header, "", "```bash", t.command, "```", "", *pivot(frame, t), "", f"*{what}*", ""]
    )


def unlisted() -> list[str]:
    """CSV names in results/benchmarks/ that `TABLES` does not show."""
    return sorted({p.stem for p in BENCHMARKS.glob("*.csv")} - set(TABLES))
