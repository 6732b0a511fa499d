# The retraining study (Zimmer, Spiegel & Pokutta, ICLR 2023): the config's `retraining`
# experiments, each a grid of weight-level IMP runs (`sosp retrain`) on dense networks trained
# by the `train` rule (shared with every other experiment of the same model, dataset, seed and
# recipe), and pruning-stable trainings (`sosp train --sparse`) retrained by FT; one report
# (workflow/scripts/retraining_report.py) with the figures. `budgets` are total retraining
# epochs, split evenly over the cycles, so One Shot and Iterative compare at equal budget.
import itertools
import json

RETRAINING = config.get("retraining", {})
RETRAIN = {}  # key -> {checkpoint, inputs, sparsity, allocation, schedule, budget, cycles, ...}
SPARSE_TRAIN = {}  # key -> {model, dataset, seed, preset, set, sparse, sparsity, options}
RETRAIN_LABELS = {}  # key -> the labels of its report row (experiment, model, seed, ...)
RETRAIN_ROWS = []  # (key, labels): one report row per experiment that asks for the job
for _rule in ("retrain", "sparse_train"):
    RULE_DEFAULTS[_rule] = dict(RULE_DEFAULTS["finetune"])
    JOB_RESOURCES[_rule] = {}


def retrain_folder(key):
    return f"{RUNS}/retrain/{key}"


def sparse_folder(key):
    return f"{RUNS}/sparse/{key}"


def _retrain_dense(name, exp, model, seed):
    """The dense network of (model, seed) under the experiment's train recipe, in the DENSE
    table with the key `_dense_jobs` gives it (so shared with the SOSP experiments)."""
    train, preset, overrides = _recipe(exp["train"], model, exp["dataset"])
    dense = {"model": model, "dataset": exp["dataset"], "seed": seed, "recipe": train}
    dkey = run_keys.run_key(f"{model}-{exp['dataset']}-s{seed}", dense)
    DENSE[dkey] = {**dense, "preset": preset, "set": overrides}
    _tag("train", dkey, [name])
    claim_resources("train", dkey)
    return dkey


def _per_cycle(name, budget, cycles):
    if budget % cycles:
        fail(
            f"{key_path(['retraining', 'experiments', name, 'budgets'])}: budget {budget} does "
            f"not split into {cycles} equal cycles; choose budgets divisible by every entry of "
            "cycles"
        )
    return budget // cycles


def _retrain_job(name, labels, checkpoint, inputs, settings):
    """One `sosp retrain` job; its key hashes everything that makes it."""
    job = {"checkpoint": checkpoint, **settings}
    tag = f"{labels['model']}-{settings['schedule']}-s{labels['seed']}"
    key = run_keys.run_key(tag, job)
    RETRAIN[key] = {**job, "inputs": inputs}
    RETRAIN_LABELS[key] = {**labels, **settings}
    RETRAIN_ROWS.append((key, RETRAIN_LABELS[key]))
    claim_resources("retrain", key)
    return key


def _train_spec(exp, wd):
    """The experiment's train spec, with weight decay `wd` where given (None: the recipe's)."""
    if wd is None:
        return exp["train"]
    return {**exp["train"], "set": {**exp["train"].get("set", {}), "weight_decay": wd}}


def _add_retraining(name, exp):
    """The IMP grid and the pruning-stable runs of retraining experiment `name`; a weight decay
    of `weight_decays` applies to training and retraining alike."""
    for model, seed, wd in itertools.product(exp["models"], exp["seeds"], exp["weight_decays"]):
        train = _train_spec(exp, wd)
        dkey = _retrain_dense(name, {**exp, "train": train}, model, seed)
        dense = dense_model(dkey)
        labels = {"experiment": name, "model": model, "dataset": exp["dataset"], "seed": seed,
                  "weight_decay": wd}  # fmt: skip
        for s, how, sched, budget, cycles in itertools.product(
            exp["sparsities"], exp["allocations"], exp["schedules"], exp["budgets"], exp["cycles"]
        ):
            settings = {
                "sparsity": s, "allocation": how, "schedule": sched, "budget": budget,
                "cycles": cycles, "per_cycle": _per_cycle(name, budget, cycles), "method": "imp",
            }  # fmt: skip
            _retrain_job(name, labels, dense, [dense], settings)
        if wd is None:
            for method, spec in exp["stable"].items():
                _stable_jobs(name, exp, model, seed, labels, method, spec)


def _stable_jobs(name, exp, model, seed, labels, method, spec):
    """A pruning-stable training per sparsity (gmp) or initial threshold (str), each retrained
    by FT for `spec.retrain` epochs."""
    train, preset, overrides = _recipe(exp["train"], model, exp["dataset"])
    values = spec["sparsities"] if method == "gmp" else spec["s_init"]
    for value in values:
        options = {"interval": spec.get("interval", 1)} if method == "gmp" else {"s_init": value}
        job = {"model": model, "dataset": exp["dataset"], "seed": seed, "recipe": train,
               "sparse": method, "sparsity": value if method == "gmp" else None,
               "options": options}  # fmt: skip
        skey = run_keys.run_key(f"{model}-{method}-s{seed}", job)
        SPARSE_TRAIN[skey] = {**job, "preset": preset, "set": overrides}
        claim_resources("sparse_train", skey)
        model_file = str(paths.model(sparse_folder(skey)))
        settings = {
            "sparsity": None, "allocation": "global", "schedule": "ft",
            "budget": spec["retrain"], "cycles": 1, "per_cycle": spec["retrain"],
            "method": method, "stable_key": skey,
            "stable_setting": value,
        }  # fmt: skip
        _retrain_job(name, labels, model_file, [model_file], settings)


for _name, _exp in RETRAINING.get("experiments", {}).items():
    _add_retraining(_name, _exp)


def retrain_cmd(key):
    job = RETRAIN[key]
    args = ["sosp", "retrain", "--checkpoint", job["checkpoint"]]
    if job["sparsity"] is not None:
        args += ["--sparsity", f"{job['sparsity']:g}", "--allocation", job["allocation"]]
    args += ["--schedule", job["schedule"], "--budget", str(job["per_cycle"])]
    args += ["--cycles", str(job["cycles"]), "--seed", str(RETRAIN_LABELS[key]["seed"])]
    args += ["--no-progress", *_common_flags()]
    return shlex.join(args + ["--out", retrain_folder(key)])


def sparse_train_cmd(key):
    job = SPARSE_TRAIN[key]
    args = ["sosp", "train", "--model", job["model"], "--dataset", job["dataset"]]
    args += _train_flags(job) + ["--sparse", job["sparse"]]
    if job["sparse"] == "gmp":
        args += ["--sparsity", f"{job['sparsity']:g}"]
        args += ["--gmp-interval", str(job["options"]["interval"])]
    else:
        args += ["--str-init", f"{job['options']['s_init']:g}"]
    return shlex.join(args + ["--out", sparse_folder(key)])


RETRAIN_RESULTS = f"{RESULTS}/retraining"
RETRAIN_REPORT = [f"{RETRAIN_RESULTS}/runs.csv", f"{RETRAIN_RESULTS}/layers.csv"]
RETRAINING_FILES = (
    RETRAIN_REPORT
    + [
        f"{FIGURES}/retraining_{name}_{figure}.png"
        for name, exp in RETRAINING.get("experiments", {}).items()
        for figure in exp["figures"]
    ]
    if RETRAIN
    else []
)


rule retrain:
    """IMP of one network: prune its weights and retrain them by one schedule and budget."""
    input:
        lambda wc: RETRAIN[wc.key]["inputs"],
    output:
        model=str(paths.model(retrain_folder("{key}"))),
        counts=str(paths.sparsity(retrain_folder("{key}"))),
    params:
        cmd=lambda wc: retrain_cmd(wc.key),
    log:
        f"{RUNS}/logs/retrain/{{key}}.log",
    threads: rule_threads("retrain")
    resources:
        **rule_resources("retrain"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} --workers {threads} > {log:q} 2>&1"


rule sparse_train:
    """A pruning-stable training (GMP, STR) from the seeded initialization."""
    output:
        model=str(paths.model(sparse_folder("{key}"))),
        counts=str(paths.sparsity(sparse_folder("{key}"))),
    params:
        cmd=lambda wc: sparse_train_cmd(wc.key),
    log:
        f"{RUNS}/logs/sparse_train/{{key}}.log",
    threads: rule_threads("sparse_train")
    resources:
        **rule_resources("sparse_train"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} --workers {threads} > {log:q} 2>&1"


def _retraining_spec():
    """What the report script reads: each experiment's title and figures, and every run's
    labels with its counts file (and for a pruning-stable run the one before retraining)."""
    runs = []
    for key, labels in RETRAIN_ROWS:
        job = RETRAIN[key]
        stable = job.get("stable_key")
        before = str(paths.sparsity(sparse_folder(stable))) if stable else None
        runs.append({**labels, "key": key, "counts": str(paths.sparsity(retrain_folder(key))),
                     "before": before})  # fmt: skip
    return {"experiments": _retraining_experiments(), "runs": runs}


def _retraining_experiments():
    """name -> {title, figures} of each retraining experiment, as the report script reads it."""
    return {
        name: {"title": exp.get("title", name), "figures": exp["figures"]}
        for name, exp in RETRAINING.get("experiments", {}).items()
    }


def retraining_report_cmd(spec, *flags):
    """The retraining report script's command line (for shell() in a `run:` block)."""
    args = ["python", f"{workflow.basedir}/workflow/scripts/retraining_report.py"]
    args += ["--spec", spec, "--results", RETRAIN_RESULTS, "--figures", FIGURES, *flags]
    return shell_words(args)


rule retraining_report:
    """The retraining study's table (runs.csv, layers.csv) and figures."""
    input:
        [str(paths.sparsity(retrain_folder(k))) for k in RETRAIN],
    output:
        RETRAINING_FILES,
    log:
        f"{RUNS}/logs/report/{NAME}-retraining.log",
    run:
        spec = f"{RETRAIN_RESULTS}/jobs.json"
        Path(RETRAIN_RESULTS).mkdir(parents=True, exist_ok=True)
        Path(spec).write_text(json.dumps(_retraining_spec(), indent=1))
        shell(retraining_report_cmd(spec) + " > {log:q} 2>&1")


rule gpu_hours:
    """Jobs per rule and their estimated GPU-hours: each job's epochs times the config's
    gpu_seconds_per_epoch (or retraining.gpu_seconds_per_epoch) of its model and dataset
    (`snakemake gpu_hours`)."""
    run:
        seconds = {**config["gpu_seconds_per_epoch"], **RETRAINING.get("gpu_seconds_per_epoch", {})}
        rows = {}

        def add(rule, model, dataset, epochs):
            per = seconds.get(f"{model}/{dataset}")
            jobs, hours = rows.get(rule, (0, 0.0))
            rows[rule] = (jobs + 1, hours + (epochs * per / 3600 if per else float("nan")))

        for job in DENSE.values():
            add("train", job["model"], job["dataset"], job["recipe"]["epochs"] * job["recipe"]["cycles"])
        for job in SPARSE_TRAIN.values():
            add("sparse_train", job["model"], job["dataset"], job["recipe"]["epochs"] * job["recipe"]["cycles"])
        for key, job in RETRAIN.items():
            labels = RETRAIN_LABELS[key]
            add("retrain", labels["model"], labels["dataset"], job["budget"])
        lines = ["rule,jobs,gpu_hours"] + [f"{r},{n},{h:.1f}" for r, (n, h) in rows.items()]
        total = sum(h for _, h in rows.values())
        lines.append(f"total,{sum(n for n, _ in rows.values())},{total:.1f}")
        print("\n".join(lines))
