# The job tables: every run the config asks for, keyed by a hash of the settings that make it
# (sosp.run_keys), so a dense checkpoint is trained once and shared by every method and ratio.
# The files inside each run folder are named by sosp.paths, as the `sosp` commands name them.
import json
import shlex
from pathlib import Path

from sosp import paths, recipes, run_keys
from sosp.settings import PruneSettings

RUNS = config["runs_dir"]
NAME = config["name"]
RESULTS = f"results/{NAME}"
FIGURES = f"figures/{NAME}"

DENSE = {}  # key -> {model, dataset, seed, recipe, spec}
IMPORTS = {}  # key -> {model, dataset, weights, sha256}: published weights as the dense network
BOTTLENECKS = {}  # key -> {model, masks, options}: expand-pruning's widths.json from masks
EXPAND_DEFAULTS = {"multiplier": 2.0, "uniform": 1.1}  # the paper's x2 and 1.1 baseline
PRUNE = {}  # key -> settings of one saliency computation and all its ratios
FINETUNE = {}  # key -> {prune, ratio, recipe, pruned, ...}
EVALUATE = {}  # "<experiment>/<key>" -> {checkpoints, inputs, record}
LATENCY = {}  # key -> {model, dataset, widths, setup}: a latency table (sosp latency-table)
LATENCY_DEFAULTS = {"precision": "fp32", "layout": "nchw", "batch_size": 64, "fold_bn": True}
TAGS = {}  # (kind, key) -> W&B tags: the config's name, then each experiment's that runs the job


def _recipe(spec, model, dataset):
    """(resolved recipe dict, preset name, overrides) for a config recipe spec."""
    preset = spec.get("preset") or recipes.default_preset(model, dataset)
    overrides = spec.get("set", {})
    return recipes.resolve(preset, overrides).as_dict(), preset, overrides


def _ratios(name, exp, model):
    """The experiment's ratios of `model`, ascending (the schema lets no ratio repeat)."""
    ratios = exp["ratios"]
    if isinstance(ratios, dict):
        if model not in ratios:
            fail(
                f"{key_path(['experiments', name, 'ratios'])}: no ratios for model {model!r}; "
                f"add {model}: [...] to it, or give one list for every model"
            )
        ratios = ratios[model]
    return sorted(ratios)


def dense_folder(key):
    return f"{RUNS}/dense/{key}"


def bottleneck_folder(key):
    return f"{RUNS}/bottlenecks/{key}"


def widths_file(bkey):
    return f"{bottleneck_folder(bkey)}/widths.json"


def mask_file(pkey, ratio):
    """The mask `sosp prune` writes for `ratio` in prune job `pkey`."""
    folder = paths.ratio_folder(prune_folder(pkey), PRUNE[pkey]["ratios"], ratio)
    return str(paths.mask(folder))


def widths_flags(widths):
    """The `--widths` option of a widened network (none for a network as registered)."""
    if not widths:
        return []
    if "file" in widths:
        return ["--widths", widths["file"]]
    return ["--widths", *[f"{unit}={m:g}" for unit, m in widths["spec"].items()]]


def widths_inputs(widths):
    """The files a job on a widened network reads before it runs: its widths.json."""
    return [widths["file"]] if widths and "file" in widths else []


def pretrained_folder(key):
    return f"{RUNS}/pretrained/{key}"


def dense_model(key):
    """The dense network's model file of dense job `key`: trained, or imported weights."""
    folder = pretrained_folder(key) if key in IMPORTS else dense_folder(key)
    return str(paths.model(folder))


def _weights(exp, model):
    """{"file", "sha256"} of the published weights the experiment gives `model`, else None."""
    given = exp["weights"].get(model)
    if given is None:
        return None
    found = {"file": given} if isinstance(given, str) else dict(given)
    return {"file": str(Path(found["file"]).expanduser().resolve()), "sha256": found.get("sha256")}


def prune_folder(key):
    return f"{RUNS}/prune/{key}"


def latency_file(key):
    """The latency table of latency job `key`."""
    return f"{RUNS}/latency/{key}/table.json"


def latency_setup(exp):
    """The experiment's latency block with its defaults (device: the config's), or None."""
    if exp["latency"] is None:
        return None
    return {"device": config["device"], **LATENCY_DEFAULTS, **exp["latency"]}


def _latency_job(name, exp, model, setup, widths=None):
    """The latency table of `model` on the experiment's dataset, widened by `widths`, on
    `setup` (the experiment's latency block): one job per network and setup, shared by every
    experiment that asks for it, and by each of its prune jobs. Returns its key."""
    table = {"model": model, "dataset": exp["dataset"], "setup": setup}
    table |= {"widths": widths} if widths else {}
    kind = "".join(c if c.isalnum() else "_" for c in setup["device"])
    key = run_keys.run_key(f"{model}-{exp['dataset']}-{kind}", table)
    LATENCY[key] = table
    claim_resources("latency_table", key, name, exp, timing=True)
    return key


def finetune_folder(key):
    return f"{RUNS}/finetune/{key}"


def pruned_file(pkey, ratio):
    """The pruned network `sosp prune` writes for `ratio` in prune job `pkey`."""
    folder = paths.ratio_folder(prune_folder(pkey), PRUNE[pkey]["ratios"], ratio)
    return str(paths.pruned(folder))


def finetuned_file(fkey, ratio):
    """The network `sosp finetune` trains from the pruned network of `ratio` in job `fkey`."""
    job = FINETUNE[fkey]
    pruned = [pruned_file(job["prune"], r) for r in job["ratios"]]
    folders = paths.finetune_folders(finetune_folder(fkey), pruned)
    return str(paths.model(folders[job["ratios"].index(ratio)]))


def _tag(kind, key, tags):
    """Add `tags` to the W&B tags of job `key` of `kind` (train, prune, finetune, evaluate): a
    job several experiments share (one dense network, say) carries each one's tags. Tags are
    not hashed: they rename no run folder."""
    have = TAGS.setdefault((kind, key), [NAME])
    for tag in tags:
        if tag not in have:
            have.append(tag)


def _add_jobs(name, exp):
    """Every job of experiment `name`: per model and seed the dense network and its pruned,
    fine-tuned and evaluated networks per pruning time and method; with `expand`, the
    bottlenecks of those masks and the same chain for the expanded and the uniformly widened
    networks."""
    for model in exp["models"]:
        dense = {seed: _dense_jobs(name, exp, model, seed) for seed in exp["seeds"]}
        for prune_at in exp["prune_at"]:
            for method in exp["methods"]:
                if prune_at == "during":
                    for seed in exp["seeds"]:
                        _rounds_jobs(name, exp, model, seed, method)
                    continue
                pkeys = {
                    seed: _pruned_jobs(name, exp, model, seed, dkey, prune_at, method)
                    for seed, dkey in dense.items()
                }
                if exp["expand"]:
                    _expanded_jobs(name, exp, model, prune_at, method, pkeys)


def _dense_jobs(name, exp, model, seed, widths=None, variant=None):
    """The dense network of (model, seed), widened by `widths` ({"spec": {...}} or {"file":
    the bottleneck job's widths.json}) where given: trained, or imported from the experiment's
    weights; and its evaluation where it is pruned after training. Returns its key."""
    tags = [name, *exp["tags"]]
    train, preset, overrides = _recipe(exp["train"], model, exp["dataset"])
    dense = {"model": model, "dataset": exp["dataset"], "seed": seed, "recipe": train}
    dense |= {"widths": widths} if widths else {}
    dense |= {"probe": exp["probe"]} if exp["probe"] else {}
    dkey = run_keys.run_key(f"{model}-{exp['dataset']}-s{seed}", dense)
    weights = _weights(exp, model) if not widths else None
    if weights is not None:  # the seed then only draws pruning samples and fine-tuning
        imported = {"model": model, "dataset": exp["dataset"], **weights}
        dkey = run_keys.run_key(f"{model}-{exp['dataset']}-pretrained", imported)
    if "trained" not in exp["prune_at"] and not exp["probe"]:
        return dkey
    if weights is not None:
        IMPORTS[dkey] = imported
        inputs = [dense_model(dkey)]
    else:
        DENSE[dkey] = {**dense, "preset": preset, "set": overrides}
        _tag("train", dkey, tags)
        claim_resources("train", dkey, name, exp)
        inputs = [dense_model(dkey), str(paths.metrics(dense_folder(dkey)))]
    record = {"config": NAME, "experiment": name, "model": model, "seed": seed}
    record |= {"variant": variant} if variant else {}
    _tag("evaluate", f"{name}/{dkey}", tags)
    EVALUATE[f"{name}/{dkey}"] = {
        "checkpoints": [dense_model(dkey)],
        "inputs": inputs,
        "record": {**record, "method": "dense", "prune_at": "none"},
        "conventions": exp["mac_conventions"],
    }
    claim_resources("evaluate", f"{name}/{dkey}", name, exp)
    return dkey


def _pruned_jobs(name, exp, model, seed, dkey, prune_at, method, widths=None, variant=None):
    """The prune job of (dense network `dkey`, widened by `widths` as `_dense_jobs` takes it,
    pruning time, method) at the experiment's ratios, the fine-tuning of each ratio and their
    evaluation. Returns the prune job's key."""
    tags = [name, *exp["tags"]]
    prune = {
        "source": dkey if prune_at == "trained" else "init",
        "model": model, "dataset": exp["dataset"], "seed": seed,
        "method": method, "options": exp["method_options"].get(method, {}),
        **{setting: exp[setting] for setting in SELECTION_SETTINGS},
        **{setting: exp[setting] for setting in OPTIONAL_SETTINGS if setting in exp},
        "exclude": exp["exclude"], "batch_size": exp["batch_size"],
        "ratios": _ratios(name, exp, model),
    }  # fmt: skip
    prune |= {"widths": widths} if widths else {}
    if prune_at == "init":  # untrained BN statistics: re-estimate them first
        prune["recalibrate_bn"] = True
    prune.update(exp["model_settings"].get(model, {}))
    prune.update(exp["method_settings"].get(method, {}))
    setup = latency_setup(exp)
    if setup is not None:  # every prune job measures its networks' latency on the table's setup
        tkey = _latency_job(name, exp, model, setup, widths)
        prune["latency_table"] = latency_file(tkey)
        if setup["device"] != config["device"]:  # a table holds only where it was measured
            prune["device"] = setup["device"]
    elif prune["budget"] == "latency":
        at = key_path(["experiments", name])
        fail(
            f"{at}: {method} on {model} has budget latency but the experiment has no latency "
            f"block to measure its latency table on; add `latency: {{}}` to it (its defaults: "
            f"the config's device, {', '.join(f'{k} {v}' for k, v in LATENCY_DEFAULTS.items())})"
        )
    pkey = run_keys.run_key(f"{model}-{method}-{prune_at}-s{seed}", prune)
    PRUNE[pkey] = prune
    claim_resources("prune", pkey, name, exp, timing=setup is not None)
    _tag("prune", pkey, tags)
    _tag("evaluate", f"{name}/{pkey}", tags)
    ft_spec = exp["finetune"] or exp["train"]
    finetune, ft_preset, ft_set = _recipe(ft_spec, model, exp["dataset"])
    groups = [prune["ratios"]] if exp["group_ratios"] else [[r] for r in prune["ratios"]]
    checkpoints, inputs = [], []
    for ratios in groups:
        ft = {"prune": pkey, "ratios": ratios, "recipe": finetune}
        tag = "-".join(f"{r:g}" for r in ratios)
        fkey = run_keys.run_key(f"{model}-{method}-r{tag}-s{seed}", ft)
        FINETUNE[fkey] = {**ft, "preset": ft_preset, "set": ft_set, "seed": seed}
        claim_resources("finetune", fkey, name, exp, ratios=len(ratios))
        _tag("finetune", fkey, tags)
        checkpoints += [finetuned_file(fkey, r) for r in ratios]
        inputs.append(str(paths.runs(finetune_folder(fkey))))
    record = {"config": NAME, "experiment": name, "model": model, "seed": seed}
    record |= {"variant": variant} if variant else {}
    EVALUATE[f"{name}/{pkey}"] = {
        "checkpoints": checkpoints,
        "inputs": inputs,
        "record": {**record, "method": method, "prune_at": prune_at},
        "conventions": exp["mac_conventions"],
    }
    claim_resources("evaluate", f"{name}/{pkey}", name, exp)
    return pkey


def _rounds_jobs(name, exp, model, seed, method):
    """Pruning during training (prune_at: during): per ratio and number of rounds, one train
    job that prunes the ratio in that many rounds and ends with the pruned network, and its
    evaluation (prune_at recorded as rounds<R>)."""
    tags = [name, *exp["tags"]]
    train, preset, overrides = _recipe(exp["train"], model, exp["dataset"])
    settings = {
        **{setting: exp[setting] for setting in SELECTION_SETTINGS},
        **{setting: exp[setting] for setting in OPTIONAL_SETTINGS if setting in exp},
        "exclude": exp["exclude"],
        **exp["model_settings"].get(model, {}),
        **exp["method_settings"].get(method, {}),
    }
    if settings["budget"] == "latency":
        fail(
            f"{key_path(['experiments', name, 'prune_at'])}: {method} on {model} has budget "
            "latency, which pruning during training (prune_at: during) does not offer: it "
            "measures no latency table; prune after training or at init for a latency budget"
        )
    for ratio in _ratios(name, exp, model):
        for rounds in exp["rounds"]:
            plan = {"method": method, "ratio": ratio, "rounds": rounds, "settings": settings,
                    "options": exp["method_options"].get(method, {})}  # fmt: skip
            job = {"model": model, "dataset": exp["dataset"], "seed": seed, "recipe": train}
            job["prune_rounds"] = plan
            key = run_keys.run_key(f"{model}-{method}-{rounds}rounds-r{ratio:g}-s{seed}", job)
            DENSE[key] = {**job, "preset": preset, "set": overrides}
            _tag("train", key, tags)
            claim_resources("train", key, name, exp)
            record = {"config": NAME, "experiment": name, "model": model, "seed": seed,
                      "method": method, "prune_at": f"rounds{rounds}"}  # fmt: skip
            _tag("evaluate", f"{name}/{key}", tags)
            EVALUATE[f"{name}/{key}"] = {
                "checkpoints": [dense_model(key)],
                "inputs": [dense_model(key), str(paths.metrics(dense_folder(key)))],
                "record": record,
                "conventions": exp["mac_conventions"],
            }
            claim_resources("evaluate", f"{name}/{key}", name, exp)


def _expanded_jobs(name, exp, model, prune_at, method, pkeys):
    """Expand-pruning (the paper's Sec. 3.4): the bottlenecks of the seeds' masks at
    `expand.ratio` (prune jobs `pkeys`, seed -> key) as a width spec, and per seed the
    expanded network and the uniformly widened baseline, each trained (or pruned at
    initialization), pruned, fine-tuned and evaluated like the standard one."""
    spec = {**EXPAND_DEFAULTS, **exp["expand"]}  # (a null-default object gets no schema defaults)
    ratio = spec["ratio"]
    if ratio not in _ratios(name, exp, model):
        fail(
            f"{key_path(['experiments', name, 'expand', 'ratio'])}: {ratio:g} is not among the "
            f"experiment's ratios for {model}, whose masks the bottlenecks are read from; set "
            f"it to one of {', '.join(f'{r:g}' for r in _ratios(name, exp, model))}"
        )
    by = {k: spec[k] for k in ("level", "count", "threshold", "multiplier") if k in spec}
    masks = [mask_file(pkey, ratio) for pkey in pkeys.values()]
    found = {"model": model, "masks": masks, "options": by}
    bkey = run_keys.run_key(f"{model}-{method}-{prune_at}-bottlenecks", found)
    # the prune jobs' declared output, written after their masks
    reports = [str(paths.reports(prune_folder(pkey))) for pkey in pkeys.values()]
    BOTTLENECKS[bkey] = {**found, "reports": reports}
    variants = {"expanded": {"file": widths_file(bkey)}}
    if spec["uniform"]:
        variants[f"widened{spec['uniform']:g}"] = {"spec": {"*": spec["uniform"]}}
    for variant, widths in variants.items():
        for seed in pkeys:
            dkey = _dense_jobs(name, exp, model, seed, widths, variant)
            _pruned_jobs(name, exp, model, seed, dkey, prune_at, method, widths, variant)


def check_latency_threads():
    """Each prune job given a latency table not measured on a GPU runs on as many CPUs
    (threads) as the table job measured it with: on a CPU a table holds only for that thread
    count (sosp refuses it otherwise), so a config whose resources differ fails here, not in
    every prune job."""
    for pkey, job in PRUNE.items():
        if "latency_table" not in job:
            continue
        tkey = Path(job["latency_table"]).parent.name
        if LATENCY[tkey]["setup"]["device"].startswith("cuda"):
            continue
        table, prune = rule_cpus("latency_table", tkey), rule_cpus("prune", pkey)
        if table != prune:
            fail(
                f"{key_path(['resources'])}: the prune jobs of {job['model']} run on {prune} "
                f"CPUs but its latency table is measured on {table}; a table holds only for the "
                "thread count it was measured with: give latency_table and prune the same "
                "cpus_per_task (or leave latency_table's unset: it takes prune's)"
            )


for _name, _exp in config["experiments"].items():
    _add_jobs(_name, _exp)
check_latency_threads()


# -- command lines ---------------------------------------------------------------------------


def shell_words(args):
    """`args` as one shell command line for a rule's `shell:` or a `run:` block's shell(): each
    word quoted (a path may hold spaces), braces doubled against snakemake's formatting."""
    return shlex.join(map(str, args)).replace("{", "{{").replace("}", "}}")


def _common_flags(device=None):
    flags = ["--device", device or config["device"]]
    if config["data_root"]:
        flags += ["--data-root", config["data_root"]]
    return flags


def _wandb_flags(kind, key, model, method):
    """The W&B options of job `key` of `kind`: none while `wandb` is disabled (the default, so
    the commands, and Snakemake's params rerun trigger, are as without W&B); else the mode,
    project, a group per (config, model, method) so seeds and ratios aggregate (dense networks:
    per model), and the job's tags (`_tag`)."""
    if config["wandb"] == "disabled":
        return []
    group = f"{NAME}-dense-{model}" if method == "dense" else f"{NAME}-{model}-{method}"
    return [
        "--wandb", config["wandb"], "--wandb-project", config["wandb_project"],
        "--wandb-group", group, "--wandb-tags", *TAGS[(kind, key)],
    ]  # fmt: skip


def _train_flags(job):
    flags = ["--recipe", job["preset"], "--seed", str(job["seed"]), "--no-progress"]
    if job["set"]:
        flags += ["--set", *[f"{k}={_value(v)}" for k, v in job["set"].items()]]
    return flags + _common_flags()


def _value(v):
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _during_training_flags(job):
    """`sosp train` options of pruning in rounds and of gradient-flow measurements."""
    flags = []
    plan = job.get("prune_rounds")
    if plan:
        flags += ["--prune-method", plan["method"], "--prune-ratio", f"{plan['ratio']:g}"]
        flags += ["--prune-rounds", str(plan["rounds"])]
        values = {**plan["settings"], **plan["options"]}
        flags += ["--prune-set", *[f"{k}={json.dumps(v)}" for k, v in values.items()]]
    probe = job.get("probe")
    if probe:
        flags += ["--probe-epochs", *map(str, probe["epochs"])]
        flags += ["--probe-samples", str(probe.get("n_samples", 1000))]
        flags += ["--probe-temperature", f"{probe.get('temperature', 1.0):g}"]
    return flags


def train_cmd(key):
    job = DENSE[key]
    args = ["sosp", "train", "--model", job["model"], "--dataset", job["dataset"]]
    args += widths_flags(job.get("widths")) + _during_training_flags(job)
    method = job["prune_rounds"]["method"] if "prune_rounds" in job else "dense"
    args += _train_flags(job) + _wandb_flags("train", key, job["model"], method)
    return shlex.join(args + ["--out", dense_folder(key)])


def import_cmd(key):
    job = IMPORTS[key]
    args = ["sosp", "import", "--model", job["model"], "--dataset", job["dataset"]]
    args += ["--weights", job["file"]] + (["--sha256", job["sha256"]] if job["sha256"] else [])
    return shlex.join(args + ["--out", pretrained_folder(key)])


def gpus(resources):
    """The GPUs a job asks for: `gpu`, else the count at the end of `gres` (gpu:a100:4)."""
    count = getattr(resources, "gpu", None)
    if not count and getattr(resources, "gres", None):
        last = str(resources.gres).rsplit(":", 1)[-1]
        count = int(last) if last.isdigit() else 1
    return int(count or 1)


def launch(cmd, resources):
    """`cmd` (a `sosp train`/`finetune` line) as the job runs it: through torchrun, one process
    per GPU on the node, where the job asks for more than one GPU."""
    n = gpus(resources)
    if n == 1:
        return cmd
    return cmd.replace("sosp ", f"torchrun --standalone --nproc-per-node {n} -m sosp ", 1)


def workers(threads, resources):
    """DataLoader workers per process: the job's CPUs shared by its processes (one per GPU)."""
    return max(1, threads // gpus(resources))


def prune_cmd(key):
    """The `sosp prune` command of job `key`; its settings (the job's entries that are
    PruneSettings fields, e.g. recalibrate_bn only for pruning at initialization) are
    written out by PruneSettings.command_line."""
    job = PRUNE[key]
    settings, _ = PruneSettings.split(job)
    args = ["sosp", "prune", "--model", job["model"], "--dataset", job["dataset"]]
    args += widths_flags(job.get("widths"))
    if job["source"] != "init":
        args += ["--checkpoint", dense_model(job["source"])]
    args += ["--method", job["method"], "--ratio", *[f"{r:g}" for r in job["ratios"]]]
    args += settings.command_line() + ["--batch-size", str(job["batch_size"])]
    if job["options"]:
        args += ["--option", *[f"{k}={_value(v)}" for k, v in job["options"].items()]]
    args += _common_flags(job.get("device"))  # a latency table's device, else the config's
    args += _wandb_flags("prune", key, job["model"], job["method"])
    return shlex.join(args + ["--out", prune_folder(key)])


def latency_table_cmd(key):
    """The `sosp latency-table` command of latency job `key`. --force: the job runs only
    where snakemake found no table (or a stale one), so it measures afresh."""
    job = LATENCY[key]
    setup = job["setup"]
    args = ["sosp", "latency-table", "--model", job["model"], "--dataset", job["dataset"]]
    args += widths_flags(job.get("widths"))
    args += ["--device", setup["device"], "--precision", setup["precision"]]
    args += ["--layout", setup["layout"], "--batch-size", str(setup["batch_size"])]
    args += ["--step", str(setup["step"])] if "step" in setup else []
    args += ["--fold-bn" if setup["fold_bn"] else "--no-fold-bn", "--force", "--no-progress"]
    return shlex.join(args + ["--out", latency_file(key)])


def bottlenecks_cmd(key):
    job = BOTTLENECKS[key]
    args = ["sosp", "bottlenecks", "--mask", *job["masks"]]
    for option, value in job["options"].items():
        args += [f"--{option}", f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(args + ["--out", widths_file(key)])


def finetune_cmd(key):
    job = FINETUNE[key]
    prune = PRUNE[job["prune"]]
    args = ["sosp", "finetune", "--pruned", *[pruned_file(job["prune"], r) for r in job["ratios"]]]
    args += _train_flags(job) + _wandb_flags("finetune", key, prune["model"], prune["method"])
    return shlex.join(args + ["--out", finetune_folder(key)])


def evaluate_cmd(key):
    job = EVALUATE[key]
    args = ["sosp", "evaluate", "--checkpoint", *job["checkpoints"]]
    record = job["record"]
    args += ["--record", *[f"{k}={v}" for k, v in record.items()]]
    if job["conventions"]:
        args += ["--convention", *job["conventions"]]
    args += _common_flags() + _wandb_flags("evaluate", key, record["model"], record["method"])
    return shlex.join(args + ["--out", f"{RESULTS}/runs/{key}.json"])


def figure_files():
    return [
        f"{FIGURES}/{name}_{figure}.png"
        for name, exp in config["experiments"].items()
        for figure in exp["figures"]
    ]


REPORT_FILES = [f"{RESULTS}/{f}" for f in ("runs.csv", "summary.csv", "tables.md", "tables.tex")]
