# SLURM resources and threads of every job, from the config's `resources` (top level) and each
# experiment's `resources`, with snakemake-executor-plugin-slurm's own keys. A rule asks for
# them with `threads: rule_threads(RULE)` and `resources: **rule_resources(RULE)`; nothing
# cluster-sized is written in a rule. Precedence, later wins: RULE_DEFAULTS[rule], the config's
# resources.default, resources.<rule>, the experiment's resources.default, its
# resources.<rule>, then snakemake's --set-resources/--set-threads. A job shared by several
# experiments (one dense network serves every experiment with its model, dataset, seed and
# recipe) gets the largest of their numbers.
#
# Values live here, in rule resources, and not in the slurm profile's default-resources:
# snakemake replaces a profile's whole default-resources list when --default-resources is given
# on the command line, which dropped cpus_per_task 8 to the plugin's fallback (threads, 1).
# Rule resources outrank default-resources, so a command-line --default-resources can only
# fill keys the config leaves unset; --set-resources RULE:KEY=VALUE changes that key alone.

# Rules that run one GPU job each on the cluster (report and replot are localrules).
RULE_DEFAULTS = {
    # runtime: minutes; finetune's is per ratio of the job (group_ratios fine-tunes several)
    "train": {"runtime": 60, "mem_mb": 16000, "cpus_per_task": 8, "gpu": 1},
    "prune": {"runtime": 30, "mem_mb": 16000, "cpus_per_task": 4, "gpu": 1},
    "finetune": {"runtime": 60, "mem_mb": 16000, "cpus_per_task": 8, "gpu": 1},
    "evaluate": {"runtime": 20, "mem_mb": 16000, "cpus_per_task": 4, "gpu": 1},
    "mask_time": {"runtime": 240, "mem_mb": 16000, "cpus_per_task": 4, "gpu": 1},
    # a latency table holds only on the machine (GPU, or CPU model and thread count) it was
    # measured on: the table job asks for what the prune jobs that read it ask (INHERITS)
    "latency_table": {"runtime": 30, "mem_mb": 16000, "cpus_per_task": 4, "gpu": 1},
}
INHERITS = {"latency_table": "prune"}  # rule -> the rule whose resources it asks for first
JOB_RESOURCES = {rule: {} for rule in RULE_DEFAULTS}  # rule -> job key -> {resource: value}
# Jobs that time networks (latency_table, and prune jobs given a table) claim one `timing`
# each: the Snakefile allows one at a time per machine, so no two measure side by side; and
# each asks for every core of the machine as its threads (timing_threads), so that nothing else
# of the workflow runs beside it either.
TIMING = "timing"


def _resolve(rule, exp=None):
    """The resources of `rule` for experiment `exp` (None: the config's alone); at each level
    a rule that INHERITS another's takes that rule's resources before its own."""
    levels = [config["resources"]] + ([exp["resources"]] if exp else [])
    resolved = dict(RULE_DEFAULTS[rule])
    for level in levels:
        resolved.update(level.get("default", {}))
        if rule in INHERITS:
            resolved.update(level.get(INHERITS[rule], {}))
        resolved.update(level.get(rule, {}))
    return resolved


def claim_resources(rule, key, exp_name=None, exp=None, ratios=1, timing=False):
    """Record the resources of job `key` of `rule` for experiment `exp_name`: its runtime
    times `ratios` (a finetune job of several ratios); with `timing`, one TIMING (a job
    that measures latency). Where experiments share the job, each number is the largest they
    ask for, and a string (partition, account, ...) set by two of them must be the same."""
    res = _resolve(rule, exp)
    res["runtime"] *= ratios
    if timing:
        res[TIMING] = 1
    where = f"config['experiments'][{exp_name!r}]['resources']" if exp else "config['resources']"
    for name, value in JOB_RESOURCES[rule].get(key, {}).items():
        mine = res.get(name)
        if mine is None or mine == value:
            res[name] = value
        elif isinstance(value, str) or isinstance(mine, str):
            fail(
                f"{where}: {rule} job {key} is shared with another experiment that sets "
                f"{name}={value!r}, this one {mine!r}; set the same {name} in both"
            )
        else:
            res[name] = max(value, mine)
    if res.get("gpu") and "gpu" in res.get("gres", ""):
        fail(
            f"{where}: {rule} jobs get gpu={res['gpu']} and gres={res['gres']!r}, both GPU "
            "requests (snakemake-executor-plugin-slurm takes one): set gpu: 0 beside gres"
        )
    JOB_RESOURCES[rule][key] = res


def _job(rule, wildcards):
    return JOB_RESOURCES[rule][wildcards.get("key", "")]


def _cli_cpus(rule):
    """The CPUs the command line gives `rule`: --set-resources RULE:cpus_per_task=N, else
    --set-threads RULE=N; None without either (or for a non-integer expression)."""
    settings = workflow.resource_settings
    given = settings.overwrite_resources.get(rule, {})
    for value in (given.get("cpus_per_task"), settings.overwrite_threads.get(rule)):
        if hasattr(value, "is_evaluable"):  # a snakemake Resource
            value = None if value.is_evaluable() else value.value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def rule_cpus(rule, key):
    """The CPUs job `key` of `rule` asks for: the command line's, else the config's
    cpus_per_task; a rule that INHERITS another's takes that rule's command-line CPUs where
    the command line gives it none of its own."""
    cli = _cli_cpus(rule)
    if cli is None and rule in INHERITS:
        cli = _cli_cpus(INHERITS[rule])
    return cli if cli is not None else JOB_RESOURCES[rule][key]["cpus_per_task"]


def job_cpus(rule, wildcards):
    """The CPUs the job of `wildcards` asks for (`rule_cpus`)."""
    return rule_cpus(rule, wildcards.get("key", ""))


def rule_threads(rule):
    """`threads:` of `rule`: the CPUs its job asks for (OMP_NUM_THREADS and DataLoader workers
    in the shell command). Snakemake caps threads at --cores where it runs the job: on a SLURM
    node (`--cores all` inside the allocation) that is cpus_per_task."""
    return lambda wildcards: job_cpus(rule, wildcards)


def timing_threads(rule):
    """`threads:` of a rule whose jobs may time networks (latency_table, prune): a job that
    claims a TIMING asks for every core where it runs (--cores), so that no other job of the
    workflow runs beside it while it times, though it computes on its CPUs alone (its shell
    sets OMP_NUM_THREADS to its cpus_per_task resource); any other job, its CPUs."""

    def threads(wildcards):
        cpus = job_cpus(rule, wildcards)
        cores = workflow.global_resources["_cores"].value
        if _job(rule, wildcards).get(TIMING) and isinstance(cores, int):
            return max(cpus, cores)
        return cpus

    return threads


def thread_env(rule):
    """`params:` of a rule whose jobs may time: the shell's environment that sets a job's
    compute threads to its cpus_per_task, OMP_NUM_THREADS; for a job that times (whose
    `threads`, every core, snakemake also exports as MKL_NUM_THREADS, which torch reads too)
    MKL_NUM_THREADS as well: a CPU latency holds only for the thread count it was taken with."""

    def env(wildcards, resources):
        n = resources.cpus_per_task
        timing = _job(rule, wildcards).get(TIMING)
        return f"OMP_NUM_THREADS={n}" + (f" MKL_NUM_THREADS={n}" if timing else "")

    return env


def rule_resources(rule):
    """`resources:` of `rule`, one callable per key that any of its jobs sets (None, unset,
    where a job does not); cpus_per_task is job_cpus, the same number as the threads."""

    def value(name):
        if name == "cpus_per_task":
            return lambda wildcards: job_cpus(rule, wildcards)
        return lambda wildcards: _job(rule, wildcards).get(name)

    names = {name for res in JOB_RESOURCES[rule].values() for name in res} or RULE_DEFAULTS[rule]
    return {name: value(name) for name in sorted(names)}


if config["mask_time"]:
    claim_resources("mask_time", "")
