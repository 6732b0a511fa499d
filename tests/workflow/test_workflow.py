"""The Snakemake workflow: a tiny config end to end, schema errors that name the key, the
re-plot target, and `snakemake --profile slurm` against a fake sbatch that records its calls."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TINY = """
name: tiny
device: cpu
experiments:
  mini:
    title: tiny digits run
    dataset: digits
    models: [resnet20]
    methods: [sosp_h, magnitude]
    ratios: [0.3, 0.6]
    seeds: [0]
    n_samples: 64
    group_ratios: true
    train: {set: {epochs: 2}}
    finetune: {set: {epochs: 1}}
"""


# A second experiment sharing mini's dense network (same model, dataset, seed and recipe).
MINI2 = """  mini2:
    dataset: digits
    models: [resnet20]
    methods: [random]
    ratios: [0.5]
    seeds: [0]
    n_samples: 64
    train: {set: {epochs: 2}}
    finetune: {set: {epochs: 1}}
"""

# TINY with one CPU per job (the defaults ask for 4 or 8, which --cores caps at the machine's)
TINY_ONE_CPU = TINY.replace(
    "name: tiny\n", "name: tiny\nresources: {default: {cpus_per_task: 1}}\n"
)


RUNS_DIR = "my runs"  # the end-to-end run's runs_dir (conftest.py): a space, as a folder may hold


def snakemake(workdir: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # this checkout's sosp, also where the installed one is another (a git worktree)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)


def write_config(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.mark.xdist_group("end_to_end")  # one worker runs the shared snakemake run
def test_tiny_config_end_to_end_and_replot(end_to_end):
    """train -> prune -> finetune -> evaluate -> report on digits; the table holds every
    (method, ratio) cell with one seed; `replot` rebuilds it from the records alone."""
    tmp_path, cfg = end_to_end
    with open(tmp_path / "results/tiny/summary.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["experiment"] == "mini"]
    cells = {(row["method"], row["ratio"]) for row in rows}
    assert cells == {("dense", "0.0"), ("sosp_h", "0.3"), ("sosp_h", "0.6"),
                     ("magnitude", "0.3"), ("magnitude", "0.6")}  # fmt: skip
    assert all(row["seeds"] == "1" for row in rows)
    sosp_h = {
        row["ratio"]: float(row["params_removed_mean"]) for row in rows if row["method"] == "sosp_h"
    }
    assert 0 < sosp_h["0.3"] < sosp_h["0.6"] < 100
    table = (tmp_path / "results/tiny/tables.md").read_text()
    assert "| resnet20 | sosp_h | trained | 0.6 | 1 |" in table
    for fig in ("accuracy_vs_params", "accuracy_vs_macs", "layerwise", "before_after"):
        assert (tmp_path / f"figures/tiny/mini_{fig}.png").stat().st_size > 10_000

    again = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert "Nothing to be done" in again.stdout + again.stderr

    (tmp_path / "results/tiny/tables.md").unlink()
    shutil.rmtree(tmp_path / "figures")
    r = snakemake(tmp_path, "replot", "--cores", "1", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "| resnet20 | sosp_h | trained | 0.6 | 1 |"
        in (tmp_path / "results/tiny/tables.md").read_text()
    )
    assert (tmp_path / "figures/tiny/mini_layerwise.png").exists()
    assert "rule train" not in r.stdout + r.stderr


def test_schema_error_names_the_key(tmp_path):
    cfg = write_config(
        tmp_path, TINY.replace("    seeds: [0]", "    seeds: [0]\n    budget: flops")
    )
    r = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(cfg))
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "['experiments']['mini']['budget']" in out and "flops" in out


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (
            "    seeds: [0]",
            "    seeds: [0]\n    budgett: params",
            ["['mini']['budgett']", "'budget'"],
        ),
        ("name: tiny", "nmae: tiny", ["config['nmae']", "'name'"]),
        ("    seeds: [0]", "    seeds: zero", ["['mini']['seeds']", "'zero'", "array"]),
        ("[0.3, 0.6]", "[0.3, 1.6]", ["['mini']['ratios'][1]", "1.6"]),
        ("dataset: digits", "dataset: digit", ["['mini']['dataset']", "'digits'", "cifar10"]),
    ],
    ids=["typo", "top-level-typo", "type", "ratio", "dataset"],
)
def test_schema_error_is_short(tmp_path, old, new, named):
    """A typo'd key or an ill-typed value: a few lines (not snakemake's schema dump) with one
    that names the key path, the bad value and what is allowed (for a typo, the close key)."""
    cfg = write_config(tmp_path, TINY.replace(old, new))
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) < 20, "\n".join(lines)
    assert any(all(n in line for n in named) for line in lines), "\n".join(lines)


@pytest.mark.parametrize(
    ("old", "new", "bad", "close", "known"),
    [
        ("[sosp_h, magnitude]", "[sosp_h, magnitud]", "'magnitud'", "'magnitude'", "sosp_i"),
        ("[resnet20]", "[resnt20]", "'resnt20'", "'resnet20'", "vgg19"),
        ("train: {set:", "train: {preset: digit, set:", "'digit'", "'digits'", "densenet"),
        ("    seeds: [0]", "    seeds: [0]\n    method_settings: {sosp_hh: {scope: local}}",
         "'sosp_hh'", "'sosp_h'", "magnitude"),
    ],
    ids=["method", "model", "recipe", "method_settings"],
)  # fmt: skip
def test_unknown_name_fails_the_dry_run(tmp_path, old, new, bad, close, known):
    """A method, model or recipe preset that sosp does not know fails `snakemake -n`, in one
    line naming the experiment, the bad name, the close names and the known ones."""
    cfg = write_config(tmp_path, TINY.replace(old, new))
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert len(out.splitlines()) < 20, out
    line = next(line for line in out.splitlines() if bad in line)
    assert "['experiments']['mini']" in line and close in line and known in line, line


def test_replot_redraws_every_committed_figure_and_names_what_it_skips(tmp_path):
    """`snakemake replot` as `make replot` runs it on the studies' config, without --cores (the
    workflow profile sets them), redraws from their committed records and CSVs every committed
    figure (the gradient-flow study's and the retraining study's), training nothing, but those
    of an experiment whose records are gone, which it names. Its folder and temporary folder
    hold a space (its commands quote their paths)."""
    work = tmp_path / "re plot"
    for results in ("runs", "retraining"):
        shutil.copytree(REPO / STUDIES / results, work / STUDIES / results)
    shutil.rmtree(work / STUDIES / "runs/expand")
    (tmp_path / "tmp dir").mkdir()
    cfg = str(REPO / "config/demo_studies.yaml")
    r = snakemake(work, "replot", "--configfile", cfg, env={"TMPDIR": str(tmp_path / "tmp dir")})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert f"replot: skipped expand: no results under {STUDIES}/ yet" in out, out[-3000:]
    assert "rule train" not in out
    assert (work / STUDIES / "tables.md").exists()
    committed = {p.name for p in (REPO / "figures/demo_studies").glob("*.png")}
    drawn = {p.name for p in (work / "figures/demo_studies").glob("*.png")}
    assert drawn == {name for name in committed if not name.startswith("expand_")}
    assert "retraining_collapse_layer_sparsity.png" in drawn


STUDIES = "results/demo_studies"  # the companion studies' committed records (make demo-all)


def test_generated_schema_checks_overrides_and_fills_defaults(tmp_path):
    """The selection settings' schema comes from sosp.settings: a bad model_settings value is
    named by its key, and an experiment's unset settings get PruneSettings' defaults (seen
    in the prune command line)."""
    bad = TINY.replace(
        "    seeds: [0]", "    seeds: [0]\n    model_settings: {resnet20: {scope: wide}}"
    )
    r = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(write_config(tmp_path, bad)))
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "['model_settings']['resnet20']['scope']" in out and "wide" in out, out[-3000:]
    r = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(write_config(tmp_path)))
    assert r.returncode == 0, r.stderr[-3000:]
    prunes = [line.split() for line in r.stdout.splitlines() if " sosp prune " in line]
    assert prunes
    for c in prunes:
        assert c[c.index("--budget") + 1] == "structures" and c[c.index("--scope") + 1] in (
            "global",
            "local",
        )
        assert "--max-layer-fraction" not in c and "--no-kernel-scaling" in c


def test_batch_size_auto_reaches_the_prune_command_and_other_words_are_refused(tmp_path):
    """`batch_size: auto` in an experiment becomes `--batch-size auto` on its prune commands;
    a word other than auto is refused by the config's schema."""
    text = TINY.replace("    n_samples: 64\n", "    n_samples: 64\n    batch_size: auto\n")
    assert text != TINY
    r = snakemake(
        tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(write_config(tmp_path, text))
    )
    assert r.returncode == 0, r.stderr[-3000:]
    prunes = [line.split() for line in r.stdout.splitlines() if " sosp prune " in line]
    assert prunes and all(c[c.index("--batch-size") + 1] == "auto" for c in prunes)
    bad = text.replace("batch_size: auto", "batch_size: most")
    (tmp_path / "bad").mkdir()
    r = snakemake(
        tmp_path / "bad", "-n", "--cores", "1", "--configfile",
        str(write_config(tmp_path / "bad", bad)),
    )  # fmt: skip
    assert r.returncode != 0, r.stderr
    assert "'most' is not allowed; allowed: 'auto' (or a value of type integer)" in r.stderr


def test_optional_settings_reach_the_command_and_unset_ones_rename_nothing(tmp_path):
    """coupling, round_to and shuffle_within_layers may be set per experiment or per method
    and reach the prune command; where unset they are not hashed, so the demo's prune jobs
    keep the run keys of its committed records (results/demo/runs)."""
    text = TINY.replace(
        "    seeds: [0]",
        "    seeds: [0]\n    round_to: 4\n    method_settings: {magnitude: "
        "{coupling: stream, shuffle_within_layers: true}}",
    )
    r = snakemake(
        tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(write_config(tmp_path, text))
    )
    assert r.returncode == 0, r.stderr[-3000:]
    prunes = [line.split() for line in r.stdout.splitlines() if " sosp prune " in line]
    by_method = {c[c.index("--method") + 1]: c for c in prunes}
    assert by_method["magnitude"][by_method["magnitude"].index("--coupling") + 1] == "stream"
    assert by_method["sosp_h"][by_method["sosp_h"].index("--coupling") + 1] == "filter"
    assert all(c[c.index("--round-to") + 1] == "4" for c in prunes)
    assert "--shuffle-within-layers" in by_method["magnitude"]
    assert "--no-shuffle-within-layers" in by_method["sosp_h"]
    demo = snakemake(tmp_path / "demo", "-n", "-p", "--cores", "1")
    assert demo.returncode == 0, demo.stderr[-3000:]
    keys = {
        Path(line.split("--out ")[1].split()[0]).name
        for line in demo.stdout.splitlines()
        if " sosp prune " in line
    }
    committed = {p.stem for p in (REPO / "results/demo/runs").rglob("*.json")}
    assert keys and keys <= committed, sorted(keys - committed)


def _tags(command: list[str]) -> list[str]:
    """The values of --wandb-tags in a command line split into words."""
    rest = command[command.index("--wandb-tags") + 1 :]
    return rest[: next((i for i, w in enumerate(rest) if w.startswith("--")), len(rest))]


def test_wandb_tags_every_job_with_its_experiments(tmp_path):
    """With `wandb: offline` every job's command (train, prune, finetune, evaluate) carries the
    W&B mode, a group per model and method, and the tags: the config's name, the experiment's
    and the experiment's own `tags` (a dense network two experiments share carries both);
    with the default, `wandb: disabled`, no command holds a W&B option."""
    text = TINY.replace(
        "    title: tiny digits run", "    title: tiny digits run\n    tags: [fig1]"
    )
    text += MINI2 + "wandb: offline\n"
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(write_config(tmp_path, text)))
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [line.split() for line in r.stdout.splitlines() if " sosp " in line]
    kinds = {c[c.index("sosp") + 1] for c in commands}
    assert kinds == {"train", "prune", "finetune", "evaluate"}
    for c in commands:
        kind = c[c.index("sosp") + 1]
        mini2 = any("random" in word or word == "experiment=mini2" for word in c)
        if kind == "train":  # the one dense network of both experiments
            assert _tags(c) == ["tiny", "mini", "fig1", "mini2"], c
        else:
            assert _tags(c) == (["tiny", "mini2"] if mini2 else ["tiny", "mini", "fig1"]), c
        method = next(w for w in ("random", "sosp_h", "magnitude", "dense") if w in str(c))
        group = "tiny-dense-resnet20" if method == "dense" else f"tiny-resnet20-{method}"
        assert c[c.index("--wandb-group") + 1] == group, c
        assert c[c.index("--wandb") + 1] == "offline", c
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(write_config(tmp_path, TINY + MINI2)))
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [line for line in r.stdout.splitlines() if " sosp " in line]
    assert commands and not any("--wandb" in c for c in commands)


FAKE_SBATCH = """#!/bin/sh
echo "$@" >> "$SBATCH_LOG"
n=$(wc -l < "$SBATCH_LOG")
echo "$((1000 + n))"
"""
FAKE_SACCT = """#!/bin/sh
n=$(wc -l < "$SBATCH_LOG")
i=1
while [ $i -le $n ]; do echo "$((1000 + i))|FAILED"; i=$((i + 1)); done
"""


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a real SLURM is on PATH")
def test_slurm_profile_submits_gpu_jobs(tmp_path):
    """`snakemake --profile slurm` from the repository root submits the first jobs (dense
    training) through sbatch with the profile's partition and account, and train's defaults
    from the config: one GPU, 60 minutes, 16000 MB and 8 CPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH, "sacct": FAKE_SACCT, "squeue": "#!/bin/sh\n",
                       "sinfo": "#!/bin/sh\n", "scontrol": "#!/bin/sh\n",
                       "sacctmgr": "#!/bin/sh\necho my-account\n",
                       "sshare": "#!/bin/sh\necho my-account\n"}.items():  # fmt: skip
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "sbatch.log"
    log.touch()
    cfg = write_config(tmp_path)
    env = {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SBATCH_LOG": str(log)}  # fmt: skip
    r = snakemake(
        tmp_path, "--profile", "slurm", "--configfile", str(cfg), "--retries", "0",
        "--slurm-init-seconds-before-status-checks", "1", env=env,
    )  # fmt: skip
    calls = log.read_text().splitlines()
    assert calls, r.stderr[-3000:]
    train = [c for c in calls if "rule_train" in c]
    assert len(train) == 1  # one dense network for the one (model, seed)
    call = train[0]
    assert "--gpus=1" in call or "--gres=gpu:1" in call, call
    assert "-p gpu" in call or "--partition gpu" in call or "--partition=gpu" in call, call
    assert "my-account" in call, call
    assert "--mem 16000" in call or "--mem=16000" in call, call
    assert "-t 60 " in call and "--cpus-per-task=8 " in call, call  # the config's defaults
    assert r.returncode != 0  # the fake cluster reports every job as failed


CLUSTER_RULES = ("train", "prune", "finetune", "evaluate")  # report and all: localrules


def dry_run_jobs(out: str) -> list[dict]:
    """The cluster jobs of `snakemake -n -p` output: rule, threads (a dry run prints none
    for 1), resources (name -> text) and shell command of each."""
    jobs = []
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            jobs.append({"rule": line.split()[1][:-1], "threads": 1, "resources": {}})
        elif jobs and line.startswith("    threads: "):
            jobs[-1]["threads"] = int(line.split(": ")[1])
        elif jobs and line.startswith("    resources: "):
            items = line.split(": ", 1)[1].split(", ")
            jobs[-1]["resources"] = dict(item.split("=", 1) for item in items)
        elif jobs and line.startswith("Shell command: "):
            jobs[-1]["shell"] = line.split(": ", 1)[1]
    return [job for job in jobs if job["rule"] in CLUSTER_RULES]


SEEDS = "    seeds: [0]\n"
SLURM_KEYS = ("runtime", "mem_mb", "cpus_per_task", "gpu", "slurm_partition", "slurm_account")


def slurm_resources(job: dict) -> dict:
    return {key: job["resources"].get(key) for key in SLURM_KEYS}


def dry_run(tmp_path: Path, text: str, *args: str) -> list[dict]:
    """The jobs of a dry run of config `text` with the slurm profile (a dry run calls no
    sbatch); --cores 64 stands for the node a job runs on (snakemake caps threads at the
    --cores where it runs the job: in a SLURM job, `--cores all` of its allocation)."""
    cfg = write_config(tmp_path, text)
    r = snakemake(
        tmp_path, "-n", "-p", "--profile", "slurm", "--cores", "64", "--configfile", str(cfg), *args
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = dry_run_jobs(r.stdout)
    assert {job["rule"] for job in jobs} == set(CLUSTER_RULES), r.stdout
    return jobs


@pytest.fixture(scope="module")
def tiny_jobs(tmp_path_factory) -> list[dict]:
    """The jobs of TINY's dry run with the slurm profile, which several tests compare with."""
    return dry_run(tmp_path_factory.mktemp("tiny"), TINY)


def test_dry_run_shows_resources_per_rule_and_threads_equal_to_cpus(tiny_jobs):
    """Every cluster job gets its rule's resources from the config's defaults (train and
    finetune 60 minutes per ratio and 8 CPUs, prune 30 and 4, evaluate 20 and 4; 16000 MB and
    one GPU each) beside the profile's partition and account, and its threads equal its
    cpus_per_task, which reach OMP_NUM_THREADS and train/finetune's DataLoader --workers."""
    expected = {"train": (60, 8), "prune": (30, 4), "finetune": (120, 8), "evaluate": (20, 4)}
    for job in tiny_jobs:
        runtime, cpus = expected[job["rule"]]  # finetune: 2 ratios in one job (group_ratios)
        assert slurm_resources(job) == {
            "runtime": str(runtime), "mem_mb": "16000", "cpus_per_task": str(cpus), "gpu": "1",
            "slurm_partition": "gpu", "slurm_account": "my-account",
        }, job  # fmt: skip
        assert job["threads"] == cpus, job
        assert job["shell"].startswith(f"OMP_NUM_THREADS={cpus} sosp {job['rule']} "), job
        if job["rule"] in ("train", "finetune"):
            assert f" --workers {cpus} " in job["shell"], job


def by_rule(jobs: list[dict]) -> dict:
    """rule -> (its jobs' SLURM resources, threads): one pair per rule, else the test fails."""
    pairs = {}
    for job in jobs:
        pair = (slurm_resources(job), job["threads"])
        assert pairs.setdefault(job["rule"], pair) == pair, job
    return pairs


def test_config_override_of_one_rule_changes_that_rule_only(tmp_path, tiny_jobs):
    """An experiment's `resources: {train: {runtime: 600}}` changes train's runtime and
    nothing else, in train or in any other rule."""
    base = by_rule(tiny_jobs)
    text = TINY.replace(SEEDS, SEEDS + "    resources: {train: {runtime: 600}}\n")
    got = by_rule(dry_run(tmp_path, text))
    assert got["train"] == ({**base["train"][0], "runtime": "600"}, base["train"][1])
    assert {**got, "train": None} == {**base, "train": None}


def test_config_resource_levels_and_shared_jobs(tmp_path):
    """The config's top-level resources.default applies to every rule, resources.<rule> above
    it, an experiment's resources above both; a job that two experiments share (the dense
    network, the prune and finetune jobs) gets the largest number each asks for."""
    top = "name: tiny\nresources: {default: {mem_mb: 8000}, evaluate: {cpus_per_task: 2}}\n"
    other = TINY[TINY.index("  mini:") :].replace("  mini:", "  other:")
    other = other.replace(
        SEEDS, SEEDS + "    resources: {default: {mem_mb: 4000}, train: {runtime: 300}}\n"
    )
    jobs = dry_run(tmp_path, TINY.replace("name: tiny\n", top) + other)
    for job in jobs:
        res = slurm_resources(job)
        if job["rule"] == "evaluate":  # one per experiment
            mem = "4000" if "experiment=other" in job["shell"] else "8000"
            assert (res["mem_mb"], res["cpus_per_task"], job["threads"]) == (mem, "2", 2), job
        else:  # shared: mini asks for 8000 MB, other for 4000; train: 60 and 300 minutes
            assert res["mem_mb"] == "8000", job
    assert [slurm_resources(j)["runtime"] for j in jobs if j["rule"] == "train"] == ["300"]


def test_command_line_override_of_one_resource_keeps_the_others(tmp_path, tiny_jobs):
    """`--set-resources train:runtime=600` changes train's runtime alone; a command-line
    `--default-resources` (which replaces the profile's whole list) leaves every rule's
    memory, CPUs and GPU at the config's; the CPUs given on the command line, by
    --set-resources RULE:cpus_per_task=N or by --set-threads RULE=N, are both the job's
    request and its threads."""
    base = by_rule(tiny_jobs)
    jobs = dry_run(
        tmp_path, TINY,
        "--set-resources", "train:runtime=600", "finetune:cpus_per_task=2",
        "--set-threads", "prune=3",
        "--default-resources", "slurm_partition=gpu", "slurm_account=my-account", "mem_mb=1000",
        "cpus_per_task=1", "runtime=5",
    )  # fmt: skip
    got = by_rule(jobs)
    assert got["train"] == ({**base["train"][0], "runtime": "600"}, base["train"][1])
    assert got["finetune"] == ({**base["finetune"][0], "cpus_per_task": "2"}, 2)
    assert got["prune"] == ({**base["prune"][0], "cpus_per_task": "3"}, 3)
    assert got["evaluate"] == base["evaluate"]
    finetune = next(job for job in jobs if job["rule"] == "finetune")
    assert (
        finetune["shell"].startswith("OMP_NUM_THREADS=2 ") and " --workers 2 " in finetune["shell"]
    )


def test_gpu_and_gres_together_fail_the_dry_run(tmp_path):
    """gres naming a GPU beside the default gpu: 1 (two GPU requests, of which the SLURM plugin
    refuses one at submission) fails `snakemake -n`, saying to set gpu: 0."""
    text = TINY.replace(SEEDS, SEEDS + "    resources: {train: {gres: 'gpu:a100:1'}}\n")
    r = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, text)))
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "['experiments']['mini']['resources']" in out and "gpu: 0" in out, out[-3000:]


@pytest.mark.parametrize("config", ["demo", "demo_studies", "paper", "latency"])
def test_shipped_configs_prune_as_the_paper_does(tmp_path, config):
    """In the shipped configs every VGG prune job caps layers at 95% (the paper's setting
    against layer collapse), and every prune job without a trained checkpoint (pruning at
    initialization) re-estimates BatchNorm statistics first; the others do not."""
    cfg = REPO / "config" / f"{config}.yaml"
    r = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    prunes = [line for line in r.stdout.splitlines() if " sosp prune " in line]
    assert prunes
    vgg = [c for c in prunes if "--model vgg" in c]
    assert vgg and all("--max-layer-fraction 0.95" in c for c in vgg)
    for c in prunes:
        at_init = "--checkpoint" not in c
        assert ("--recalibrate-bn" in c.split()) == at_init, c
    if config == "paper":
        assert any("--checkpoint" not in c for c in prunes)


def test_expand_pruning_adds_bottlenecks_and_widened_chains(tmp_path):
    """`expand: {ratio: 0.3}`: per method one bottlenecks job reading the masks at 0.3, the
    expanded network (its widths.json) and the uniform x1.1 baseline (one network shared by
    both methods) trained, pruned with their widths and fine-tuned; a ratio the experiment
    does not prune at fails the dry run, naming the key."""
    text = TINY.replace("    seeds: [0]", "    seeds: [0]\n    expand: {ratio: 0.3}")
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(write_config(tmp_path, text)))
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    assert counts["bottlenecks"] == "2" and counts["train"] == "4"
    lines = r.stdout.splitlines()
    finder = [c for c in lines if " sosp bottlenecks " in c]
    assert all("/0.3/mask.json" in c for c in finder)
    trains = [c for c in lines if " sosp train " in c]
    assert sum("widths.json" in c for c in trains) == 2 and sum("'*=1.1'" in c for c in trains) == 1
    prunes = [c for c in lines if " sosp prune " in c]
    assert sum("--widths" in c for c in prunes) == 4  # 2 methods x (expanded, widened)
    bad = text.replace("expand: {ratio: 0.3}", "expand: {ratio: 0.5}")
    r = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, bad)))
    assert r.returncode != 0 and "['expand']['ratio']: 0.5 is not among" in r.stdout + r.stderr
