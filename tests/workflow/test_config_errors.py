"""A user's workflow mistakes end in one line naming the config file and the fix, before any
job runs; every path in every rule's shell command is quoted (a folder may hold a space);
`snakemake replot` on a config with no records says what to run first."""

import shlex

import pytest

from tests.workflow.test_workflow import REPO, RUNS_DIR, TINY, snakemake, write_config

PROFILE_NOTE = "Using workflow specific profile"  # snakemake's own line, printed on every run
RETRAINING = """retraining:
  experiments:
    imp:
      dataset: digits
      models: [vgg11_quarter]
      sparsities: [0.9]
"""


def error_lines(r) -> list[str]:
    """The lines a failed `snakemake -n` printed, but snakemake's profile note."""
    return [line for line in (r.stdout + r.stderr).splitlines() if PROFILE_NOTE not in line]


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        (TINY[TINY.index("experiments:") :], "experiments: {}\n",
         ["no experiments", "under `experiments:`"]),
        ("seeds: [0]", "seeds: [0, 1, 0]", ["['mini']['seeds']: 0 is listed twice", "once"]),
        ("[sosp_h, magnitude]", "[sosp_h, magnitude, sosp_h]",
         ["['mini']['methods']: 'sosp_h' is listed twice"]),
        ("[0.3, 0.6]", "{resnet20: [0.3, 0.6, 0.3]}",
         ["['mini']['ratios']['resnet20']: 0.3 is listed twice"]),
        ("[0.3, 0.6]", "{vgg11_quarter: [0.3]}",
         ["['mini']['ratios']: no ratios for model 'resnet20'", "add resnet20:"]),
        ("train: {set: {epochs: 2}}", "train: {set: {epoch: 2}}",
         ["['mini']['train']", "'epoch'", "epochs"]),
        ("name: tiny\n", "name: tiny\n" + RETRAINING.replace("vgg11_quarter", "vgg11_quater"),
         ["['retraining']['experiments']['imp']['models'][0]", "'vgg11_quarter'"]),
    ],
    ids=["no-experiments", "seeds", "methods", "ratios", "ratios-mapping", "recipe-key",
         "retraining-model"],
)  # fmt: skip
def test_config_mistake_is_one_line(tmp_path, old, new, named):
    """Each config mistake (no experiments at all; a seed, method or ratio listed twice, which
    the job tables dropped; a ratios mapping without a model; a recipe key sosp lacks; an
    unknown model in a retraining experiment) fails `snakemake -n` with exit status 2 and one
    line, `sosp workflow: error: <config file>: <key path>: ...`, naming the bad value and the
    fix."""
    cfg = write_config(tmp_path, TINY.replace(old, new))
    r = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"sosp workflow: error: {cfg.name}: "), lines[0]  # cwd-relative
    assert all(n in lines[0] for n in named), lines[0]


def test_replot_without_records_says_what_to_run(tmp_path):
    """`snakemake replot` with a config whose records are not there (config/paper.yaml's are
    not committed) fails in one line saying so and what to run first, not in snakemake's
    report of a failed job."""
    cfg = REPO / "config/paper.yaml"
    r = snakemake(tmp_path, "replot", "--configfile", str(cfg))
    assert r.returncode == 2
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, out
    assert "nothing to replot: no records of config 'paper' in results/paper/runs/" in errors[0]
    assert f"run `snakemake --configfile {cfg}` first" in errors[0], errors[0]
    assert "Error in rule" not in out and "Traceback" not in out


# every rule with a shell command: an expanded network (bottlenecks), imported weights, the
# retraining study (retrain, sparse_train), Fig. 2's timing (mask_time) and latency tables
# (of the expanded networks too: their --widths file), all in folders with a space
QUOTED = f"""name: quoted
device: cpu
runs_dir: {RUNS_DIR}
data_root: my data
mask_time: {{widths: [1], n_samples: 8, device: cpu}}
experiments:
  mini:
    dataset: digits
    models: [resnet20]
    methods: [sosp_h]
    ratios: [0.5]
    seeds: [0]
    expand: {{ratio: 0.5}}
    latency: {{}}
  imported:
    dataset: digits
    models: [resnet20]
    weights: {{resnet20: {{file: my weights/r20.pth, sha256: 0123456789abcdef}}}}
    methods: [magnitude]
    ratios: [0.5]
    seeds: [0]
{RETRAINING}      budgets: [1]
      stable: {{gmp: {{sparsities: [0.9], retrain: 1}}}}
"""
SHELL_RULES = {"train", "import_weights", "prune", "bottlenecks", "finetune", "evaluate",
               "report", "mask_time", "retrain", "sparse_train", "latency_table"}  # fmt: skip


def shell_commands(out: str) -> list[tuple[str, str]]:
    """(rule, shell command) of every job in `snakemake -n -p` output."""
    commands, rule = [], None
    for line in out.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1][:-1]
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            commands.append((rule, line.split(": ", 1)[1]))
    return commands


def test_every_shell_command_quotes_its_paths(tmp_path):
    """With a runs_dir, data_root and weights file holding a space, every rule's shell
    command, split as the shell splits it, keeps each path one word: the log redirect goes
    into the run folder's logs, and --out, --data-root and --weights are whole."""
    cfg = write_config(tmp_path, QUOTED)
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    commands = shell_commands(r.stdout)
    assert {rule for rule, _ in commands} == SHELL_RULES
    for rule, command in commands:
        words = shlex.split(command)
        assert "my" not in words, command
        assert words[words.index(">") + 1].startswith(f"{RUNS_DIR}/logs/{rule.split('_')[0]}")
        for flag, start in (("--data-root", "my data"), ("--weights", str(tmp_path / "my "))):
            if flag in words:
                assert words[words.index(flag) + 1].startswith(start), command
        if "--out" in words and rule not in ("evaluate", "mask_time"):
            assert words[words.index("--out") + 1].startswith(f"{RUNS_DIR}/"), command


@pytest.mark.xdist_group("end_to_end")  # one worker runs the shared snakemake run
def test_jobs_in_folders_with_a_space_log_into_their_run_folder(end_to_end):
    """The end-to-end run (conftest.py) in a folder with a space, with runs_dir 'my runs':
    every job ran and wrote its log into the run folder's logs, and nothing else was written
    beside the config (an unquoted redirect wrote each job's error into a stray file 'my')."""
    tmp_path, cfg = end_to_end
    logs = tmp_path / RUNS_DIR / "logs"
    assert {p.name for p in logs.iterdir()} == {"train", "import", "prune", "finetune",
                                                "evaluate", "report"}  # fmt: skip
    assert all(p.stat().st_size > 0 for p in logs.glob("train/*.log"))
    expected = {RUNS_DIR, "results", "figures", "data", ".snakemake", cfg.name}
    assert {p.name for p in tmp_path.iterdir()} - {"resnet18-imagenette.pth"} == expected
