"""Latency in the workflow: an experiment's `latency` block makes one latency-table job per
(model, setup) that every prune job of the experiment reads (config/latency.yaml's DAG); the
jobs that time networks run one at a time (the `timing` resource, checked on a real run of
fake commands); the report's accuracy_vs_latency figure from synthetic records; a bad latency
block, or a latency budget without one, fails in one line."""

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow.test_config_errors import error_lines
from tests.workflow.test_report import _report
from tests.workflow.test_workflow import REPO, TINY, snakemake, write_config


def dry_run_jobs(out: str) -> list[dict]:
    """Every job of `snakemake -n -p` output: rule, input and output files, resources (name
    -> text) and the shell command split into words."""
    jobs = []
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1][:-1], "input": [], "output": [], "resources": {}})
        elif jobs and line.startswith(("    input: ", "    output: ")):
            key, files = line.strip().split(": ", 1)
            jobs[-1][key] = files.split(", ")
        elif jobs and line.startswith("    resources: "):
            items = line.split(": ", 1)[1].split(", ")
            jobs[-1]["resources"] = dict(item.split("=", 1) for item in items)
        elif jobs and line.startswith("Shell command: ") and line != "Shell command: None":
            jobs[-1]["words"] = shlex.split(line.split(": ", 1)[1])
    return jobs


def value(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


def test_latency_config_measures_one_table_per_model_for_every_prune_job(tmp_path):
    """config/latency.yaml's DAG: one latency_table job per model (both experiments share
    the setup: cpu, fp32, nhwc, batch 256), and every prune job, latency budget or MAC
    budget, reads its model's table (an input) and passes it as --latency-table, on the
    table's device; the table jobs and those prune jobs claim timing=1 and one CPU each."""
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config/latency.yaml"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = dry_run_jobs(r.stdout)
    tables = [job for job in jobs if job["rule"] == "latency_table"]
    by_model = {value(job["words"], "--model"): job for job in tables}
    assert len(tables) == len(by_model) == 2 and set(by_model) == {"resnet20", "vgg11_quarter"}
    for job in tables:
        words = job["words"]
        setup = [value(words, f) for f in ("--device", "--precision", "--layout", "--batch-size")]
        assert setup == ["cpu", "fp32", "nhwc", "256"], words
        assert job["output"] == [value(words, "--out")] and "--force" in words
        assert words[:2] == ["OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"], words
        assert job["resources"]["timing"] == "1", job
    prunes = [job for job in jobs if job["rule"] == "prune"]
    budgets = [value(job["words"], "--budget") for job in prunes]
    # 2 models x 2 seeds x 2 methods, with either budget
    assert len(prunes) == 16 and budgets.count("latency") == budgets.count("macs") == 8
    for job in prunes:
        words = job["words"]
        table = by_model[value(words, "--model")]["output"][0]
        assert value(words, "--latency-table") == table and table in job["input"], words
        assert value(words, "--device") == "cpu", words
        assert words[:2] == ["OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"], words
        assert job["resources"]["timing"] == "1", job
    # nothing else times: the resource is the measuring jobs' alone
    assert all("timing" not in job["resources"] for job in jobs if job["rule"] != "prune"
               and job["rule"] != "latency_table")  # fmt: skip


LATENCY_TINY = TINY.replace("    seeds: [0]\n", "    seeds: [0]\n    latency: {batch_size: 8}\n")
RESOURCES = "name: tiny\nresources: {default: {cpus_per_task: 1}}\n"

# A stand-in for the `sosp` command: it notes when each job starts and ends, waits a little,
# and writes the files the rule declares (train: model and metrics; latency-table: the table;
# prune: reports.json; anything else: nothing).
FAKE_SOSP = f"""#!{sys.executable}
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
threads = os.environ["OMP_NUM_THREADS"] + "," + os.environ["MKL_NUM_THREADS"]
with open(os.environ["JOB_TIMES"], "a") as f:
    f.write(f"start {{args[0]}} {{time.time()}} {{threads}}\\n")
time.sleep(1.5)
if args[0] == "train":
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_text("")
    (out / "metrics.json").write_text("{{}}")
elif args[0] == "latency-table":
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("{{}}")
elif args[0] == "prune":
    out.mkdir(parents=True, exist_ok=True)
    (out / "reports.json").write_text("[]")
with open(os.environ["JOB_TIMES"], "a") as f:
    f.write(f"end {{args[0]}} {{time.time()}} {{threads}}\\n")
"""


def _intervals(log: Path) -> list[tuple[str, float, float, str]]:
    """(command, start, end, its OMP and MKL threads) of every fake job, from its start and
    end lines (in the order each command's jobs started and ended: the fake jobs of one
    command take equally long)."""
    starts, out = {}, []
    for line in log.read_text().splitlines():
        kind, command, t, threads = line.split()
        if kind == "start":
            starts.setdefault(command, []).append(float(t))
        else:
            out.append((command, starts[command].pop(0), float(t), threads))
    return out


def _fake_run(tmp_path: Path, *args: str) -> list[tuple[str, float, float, str]]:
    """The (command, start, end) of every job of LATENCY_TINY's run up to its prune jobs
    (train, latency-table, two prunes) on 2 cores, each job a fake `sosp` of 1.5 s."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sosp").write_text(FAKE_SOSP)
    (bin_dir / "sosp").chmod(0o755)
    times = tmp_path / "times.txt"
    cfg = write_config(tmp_path, LATENCY_TINY.replace("name: tiny\n", RESOURCES))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_TIMES": str(times)}
    r = snakemake(
        tmp_path, "--cores", "2", "--until", "prune", "--configfile", str(cfg), *args, env=env
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = _intervals(times)
    assert sorted(job[0] for job in jobs) == [
        "latency-table", "prune", "prune", "train"
    ]  # fmt: skip
    return jobs


def _overlap(a: tuple, b: tuple) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_jobs_that_time_run_alone(tmp_path):
    """The jobs that time networks (the latency table, the prune jobs given it) ask for every
    core as their threads, so on two cores none runs beside another job (the table, which
    needs no input, would otherwise run beside the training), though each computes on its one
    CPU: OMP_NUM_THREADS and MKL_NUM_THREADS (which snakemake sets to the threads, and torch
    reads) are 1."""
    jobs = _fake_run(tmp_path)
    for i, job in enumerate(jobs):
        if job[0] != "train":
            assert not any(_overlap(job, other) for other in jobs[:i] + jobs[i + 1 :]), jobs
            assert job[3] == "1,1", jobs


@pytest.mark.parametrize("limit", [None, "2"], ids=["default", "two-at-a-time"])
def test_timing_limit_keeps_jobs_that_time_apart(tmp_path, limit):
    """With their threads capped at 1 (--max-threads 1: their claim on every core gone), the
    two prune jobs that time, both ready at once, still run one after the other: the
    workflow's default limit of one `timing`; `--resources timing=2` lets them run side by
    side (so it is the limit that kept them apart)."""
    extra = ["--resources", f"timing={limit}"] if limit else []
    jobs = _fake_run(tmp_path, "--max-threads", "1", *extra)
    first, second = (job for job in jobs if job[0] == "prune")
    assert _overlap(first, second) == (limit is not None), jobs


def _record(experiment, method, budget, seed, ratio, removed, acc, before) -> dict:
    """One record as `sosp evaluate` writes it for a fine-tuned network whose prune report
    carries a measured latency (`removed`: the fraction of the dense network's)."""
    dense_ms = 10.0 + seed  # the seeds' timings differ; their removed fractions are the spread
    on = {"device": "cpu", "device_name": "Test CPU, 1 threads", "torch": "2", "batch": 256,
          "precision": "fp32", "layout": "nhwc", "fold_bn": True}  # fmt: skip
    latency = {
        "measured_on": on, "requested_removed": ratio if budget == "latency" else None,
        "dense_table_ms": dense_ms, "predicted_ms": dense_ms * (1 - ratio),
        "predicted_removed": ratio, "dense_ms": dense_ms, "measured_ms": dense_ms * (1 - removed),
        "measured_removed": removed, "speedup_predicted": 1 / (1 - ratio),
        "speedup_measured": 1 / (1 - removed),
    }  # fmt: skip
    prune = {"ratio": ratio, "budget": budget, "before": {"params": 1000, "macs": 1000},
             "latency": latency}  # fmt: skip
    return {
        "experiment": experiment, "model": "resnet20", "dataset": "digits", "method": method,
        "seed": seed, "test_acc": acc, "test_acc_before_finetune": before, "params": 600,
        "macs": 500, "checkpoint": f"{experiment}/{method}/{ratio}/{seed}", "prune": prune,
    }  # fmt: skip


def _records() -> list[dict]:
    """Both budgets' experiments: SOSP-H and SOSP-I at two ratios, two seeds each (the
    second seed 2 points more accurate and 2 points less latency removed), and the dense
    network of each experiment."""
    records = []
    for experiment, budget, ratios in (("lat", "latency", (0.2, 0.4)), ("mac", "macs", (0.5, 0.8))):
        for seed in (0, 1):
            dense = {"experiment": experiment, "model": "resnet20", "dataset": "digits",
                     "method": "dense", "seed": seed, "test_acc": 0.98, "params": 1000,
                     "macs": 1000, "checkpoint": f"dense{seed}"}  # fmt: skip
            records.append(dense)
            for method, bonus in (("sosp_h", 0.0), ("sosp_i", 0.01)):
                for ratio in ratios:
                    removed = ratio / 2 - 0.02 * seed if budget == "macs" else ratio - 0.02 * seed
                    acc, before = 0.95 + bonus + 0.02 * seed, 0.5 + bonus + 0.02 * seed
                    records.append(_record(experiment, method, budget, seed, ratio, removed, acc,
                                           before))  # fmt: skip
    return records


def test_accuracy_vs_latency_draws_both_budgets_against_measured_latency(monkeypatch):
    """From synthetic records of a latency-budget experiment and a MAC-budget one drawn
    beside it: per row (after, before fine-tuning) one line per method and budget, at the
    measured latency's mean (% of the dense network's) with its seed spread both ways, and
    the accuracy's mean and spread; labelled by method and budget."""
    report = _report()
    runs, _ = report.frames(_records())
    summary = report.summarize(runs)
    summary = summary.merge(
        runs.groupby(report.CELL)[["budget", "latency_on"]].first().reset_index(),
        on=report.CELL,
    )
    drawn = {}
    monkeypatch.setattr(report, "save", lambda fig, path: drawn.update(fig=fig, path=path))
    report.accuracy_vs_latency(summary, "lat", "t", Path("x.png"), beside=["mac"])
    after, before = drawn["fig"].axes[:2]
    assert after.get_title() == "resnet20, after fine-tuning"
    assert "Test CPU, 1 threads; fp32 nhwc, batch 256" in drawn["fig"]._suptitle.get_text()
    labels = {c.get_label(): c for c in after.containers}
    assert set(labels) == {"SOSP-H, latency budget", "SOSP-I, latency budget",
                           "SOSP-H, MAC budget", "SOSP-I, MAC budget"}  # fmt: skip
    line, _, bars = labels["SOSP-I, latency budget"].lines  # data, caps, (x, y) spreads
    # seeds remove 20% and 18% (mean 19) at ratio 0.2: 81% of the dense latency remains
    assert list(line.get_xdata()) == pytest.approx([81.0, 61.0])
    assert list(line.get_ydata()) == pytest.approx([97.0, 97.0])  # 96 and 98
    assert len(bars) == 2  # the x and the y spread
    mac = before.containers[[c.get_label() for c in before.containers].index("SOSP-H, MAC budget")]
    assert list(mac.lines[0].get_xdata()) == pytest.approx([76.0, 61.0])
    assert list(mac.lines[0].get_ydata()) == pytest.approx([51.0, 51.0])


def _run_report(tmp_path: Path, records: list[dict], experiments: dict):
    """report.py on `records` for `experiments` (name -> title, dataset, figures, beside)."""
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    cmd = [sys.executable, str(REPO / "workflow/scripts/report.py")]
    cmd += ["--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figures")]
    cmd += ["--experiments", json.dumps(experiments), "--records", str(path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def test_report_writes_latency_columns_and_the_figure(tmp_path):
    """report.py on the synthetic records: runs.csv holds each network's measured and
    predicted latency, the budget and the accuracy before fine-tuning; summary.csv their means
    over seeds; the figure is written; a config without latency keeps runs.csv's columns."""
    lat = {"title": "t", "dataset": "digits", "figures": ["accuracy_vs_latency"]}
    mac = {"title": "m", "dataset": "digits", "figures": []}
    _run_report(tmp_path, _records(), {"lat": {**lat, "beside": ["mac"]}, "mac": mac})
    assert (tmp_path / "figures/lat_accuracy_vs_latency.png").stat().st_size > 10_000
    with open(tmp_path / "results/runs.csv") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["method"] == "sosp_h" and r["experiment"] == "lat")
    for column in ("measured_ms", "dense_ms", "speedup_measured", "predicted_ms", "budget",
                   "acc_before_ft", "latency_removed"):  # fmt: skip
        assert row[column] != "", column
    assert float(row["measured_ms"]) == pytest.approx(8.0) and row["budget"] == "latency"
    with open(tmp_path / "results/summary.csv") as f:
        cells = list(csv.DictReader(f))
    cell = next(c for c in cells if c["method"] == "sosp_h" and c["ratio"] == "0.2")
    assert float(cell["latency_removed_mean"]) == pytest.approx(19.0)
    assert "measured latency removed (%)" in (tmp_path / "results/tables.md").read_text()

    dense = [r for r in _records() if r["method"] == "dense"]
    _run_report(tmp_path, dense, {"lat": {**lat, "figures": []}})
    header = (tmp_path / "results/runs.csv").read_text().splitlines()[0]
    assert "latency" not in header and "measured_ms" not in header


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("latency: {batch_size: 8}", "latency: {layout: nhcw}",
         ["['mini']['latency']['layout']", "'nhcw'", "'nhwc'"]),
        ("latency: {batch_size: 8}", "latency: {batch_size: 0}",
         ["['mini']['latency']['batch_size']", "out of range", ">= 1"]),
        ("latency: {batch_size: 8}", "latency: {devcie: cpu}",
         ["['mini']['latency']['devcie']", "unknown key", "'device'"]),
        ("latency: {batch_size: 8}", "budget: latency",
         ["['experiments']['mini']", "budget latency", "latency: {}"]),
        ("latency: {batch_size: 8}", "figures: [accuracy_vs_latency]",
         ["['mini']['figures']", "accuracy_vs_latency", "latency block"]),
        ("latency: {batch_size: 8}", "latency: {}\n    beside: [mini3]",
         ["['mini']['beside'][0]", "'mini3'"]),
        ("name: tiny\n", "name: tiny\nresources: {latency_table: {cpus_per_task: 2}}\n",
         ["config['resources']", "4 CPUs", "measured on 2", "same cpus_per_task"]),
    ],
    ids=["layout", "batch", "key", "budget-without-block", "figure-without-block", "beside",
         "threads"],
)  # fmt: skip
def test_bad_latency_block_is_one_line(tmp_path, old, new, named):
    """A mistyped layout, a batch of 0, a misspelt key, a latency budget or figure without a
    latency block, a `beside` naming no experiment, a table measured on other CPUs than its
    prune jobs: `snakemake -n` fails with one line naming the key and the fix."""
    cfg = write_config(tmp_path, LATENCY_TINY.replace(old, new))
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, "\n".join(lines)
    assert all(n in lines[0] for n in named), lines[0]
