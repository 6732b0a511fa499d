# The SOSP replication workflow: config -> train -> prune -> finetune -> evaluate -> report.
#
#   snakemake --cores all                                   # the embedded demo (config/demo.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml   # the paper, on a SLURM cluster
#   snakemake replot                                        # tables and figures from cached results
#
# Every rule calls the `sosp` command; see docs/guide/workflow.md. `--cores all` is the default: the workflow
# profile profiles/default (a link into workflow/profiles/) sets it.
import difflib
import importlib.util
import json
import os
import reprlib
import sys
import tempfile
from pathlib import Path

from jsonschema.exceptions import ValidationError, best_match
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

import torch

from sosp import methods, models, recipes
from sosp.errors import SospError

min_version("9.0")


def _load(name, path):
    """The module in file `path` (beside this Snakefile) as `name`; not `import workflow.X`,
    which would rebind this file's `workflow`, snakemake's workflow object."""
    spec = importlib.util.spec_from_file_location(name, Path(workflow.basedir, path))
    loaded = importlib.util.module_from_spec(spec)  # (`module` is a snakemake keyword)
    spec.loader.exec_module(loaded)
    return loaded


# the config's schema, completed from sosp's registries (also read by the docs' config reference)
_schema = _load("config_schema", "workflow/config_schema.py")
config_schema = _schema.config_schema
SELECTION_SETTINGS, OPTIONAL_SETTINGS = _schema.SELECTION_SETTINGS, _schema.OPTIONAL_SETTINGS


class ConfigError(ValueError):
    """A bad config; its message is one line that names the key and the fix (`fail` prints
    it)."""


def shown(path):
    """`path` (a config file) relative to the working directory where it lies below it."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def fail(message):
    """End the run on a bad config: one line, `sosp workflow: error: <config files>: <message>`,
    and exit status 2, as sosp's commands end on a user error (a WorkflowError would print the
    traceback of where it was raised). The job tables (common.smk, retraining.smk) call it too."""
    files = ", ".join(map(shown, workflow.configfiles)) or "the config"
    print(f"sosp workflow: error: {files}: {message}", file=sys.stderr)
    sys.exit(2)


def validate_config(config):
    """Check `config` against `config_schema()` and fill in its defaults (snakemake's
    `validate` reads a schema only from a file). A violation is a ConfigError of one line
    (see `schema_error`), not snakemake's dump of the schema."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.schema.json")
        path.write_text(json.dumps(config_schema()))
        try:
            validate(config, str(path))
        except WorkflowError as e:
            cause = e.__cause__ or e.__context__
            if not isinstance(cause, ValidationError):
                raise
            raise ConfigError(schema_error(cause)) from None


def key_path(path):
    """A config key path as jsonschema writes it: config['experiments']['mini']['budget']."""
    return "config" + "".join(f"[{key!r}]" for key in path)


def close_to(value, known):
    """' (did you mean X?)' for the names in `known` close to `value`, else ''."""
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=3)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def short_repr(value):
    """repr(value), cut short."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    return short.repr(value)


# a schema's bounds of a number, as the error message writes them
BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def repeated(values):
    """The first of `values` equal to an earlier one (None if none is)."""
    return next((v for i, v in enumerate(values) if v in values[:i]), None)


def schema_error(error):
    """One line for a jsonschema ValidationError: the key path, the bad value and what is
    allowed there."""
    path, value, allowed = list(error.absolute_path), error.instance, error.validator_value
    if error.context:  # oneOf/anyOf: the branch of the value's type, else every type allowed
        inner = [
            e for e in error.context
            if e.validator != "type" or e.absolute_path != error.absolute_path
        ]
        if inner:
            message = schema_error(max(inner, key=lambda e: len(e.absolute_path)))
            types = [  # the branches the value is not even of the type of, e.g. integer
                str(e.validator_value) for e in error.context
                if e.validator == "type" and e.absolute_path == error.absolute_path
            ]  # fmt: skip
            return message + (f" (or a value of type {' or '.join(types)})" if types else "")
        if all(e.validator == "type" for e in error.context):
            types = " or ".join(str(e.validator_value) for e in error.context)
            return f"{key_path(path)}: {short_repr(value)} is a {type(value).__name__}, not {types}"
        return schema_error(best_match(error.context))
    if error.validator == "additionalProperties" and isinstance(value, dict):
        known = list(error.schema.get("properties", {}))
        key = next(k for k in value if k not in known)
        bad = f"{key_path(path + [key])}: unknown key{close_to(key, known)}"
        return f"{bad}; allowed keys: {', '.join(known)}"
    if error.validator == "enum":
        bad = f"{short_repr(value)} is not allowed{close_to(value, allowed)}"
        return f"{key_path(path)}: {bad}; allowed: {', '.join(map(repr, allowed))}"
    if error.validator == "required":
        missing = next(k for k in allowed if k not in value)
        unknown = [k for k in value if k not in error.schema.get("properties", {})]
        typo = difflib.get_close_matches(missing, unknown, n=1)
        hint = f"; is {key_path(path + typo)} a typo of it?" if typo else ""
        return f"{key_path(path + [missing])}: missing (required){hint}"
    if error.validator == "uniqueItems":
        return f"{key_path(path)}: {short_repr(repeated(value))} is listed twice; list it once"
    if error.validator == "minItems":
        return f"{key_path(path)}: empty; list at least {allowed} value(s)"
    if error.validator in BOUNDS:
        bounds = [f"{op} {error.schema[k]}" for k, op in BOUNDS.items() if k in error.schema]
        bounds = " and ".join(bounds)
        return f"{key_path(path)}: {short_repr(value)} is out of range; set a value {bounds}"
    if error.validator == "pattern":
        return (
            f"{key_path(path)}: {short_repr(value)} does not match the pattern {allowed}; use "
            "only the characters it allows"
        )
    if error.validator == "type":
        types = " or ".join(allowed) if isinstance(allowed, list) else allowed
        return f"{key_path(path)}: {short_repr(value)} is a {type(value).__name__}, not {types}"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"{key_path(path)}: {message}"


def check_names(config):
    """Every model, method and recipe preset the experiments (and the retraining study's) name
    is registered in sosp (a dataset is checked by the schema): an unknown name fails here, at
    `snakemake -n`, not inside a job. The error names the key, the bad name, the close ones
    and the known ones."""
    known = {"model": models.names(), "method": methods.names(), "recipe": list(recipes.PRESETS)}

    def check(kind, name, path):
        if kind == "model" and str(name).startswith("timm/"):  # any timm model, by name
            return
        if name not in known[kind]:
            raise ConfigError(
                f"{key_path(path)}: unknown {kind} {name!r}{close_to(name, known[kind])}; "
                f"known {kind}s: {', '.join(known[kind])}"
            )

    for at, exp in experiment_paths(config):
        for i, model in enumerate(exp["models"]):
            check("model", model, at + ["models", i])
        for i, method in enumerate(exp.get("methods", [])):
            check("method", method, at + ["methods", i])
        if isinstance(exp.get("ratios"), dict):
            for model in exp["ratios"]:
                check("model", model, at + ["ratios", model])
        for key in ("model_settings", "weights"):
            for model in exp.get(key, {}):
                check("model", model, at + [key, model])
        for key in ("method_settings", "method_options"):
            for method in exp.get(key, {}):
                check("method", method, at + [key, method])
        for key in ("train", "finetune"):
            if exp.get(key, {}).get("preset") is not None:
                check("recipe", exp[key]["preset"], at + [key, "preset"])


def experiment_paths(config):
    """(key path, experiment) of every experiment: the SOSP ones, then the retraining study's."""
    for name, exp in config["experiments"].items():
        yield ["experiments", name], exp
    for name, exp in config["retraining"]["experiments"].items():
        yield ["retraining", "experiments", name], exp


def check_recipes(config):
    """Every experiment's train and finetune recipe resolves for each of its models (a `set`
    key sosp's recipes lack, or a value out of range, fails here rather than in every job)."""
    for at, exp in experiment_paths(config):
        for key in ("train", "finetune"):
            spec = exp.get(key) or {}
            for model in exp["models"]:
                preset = spec.get("preset") or recipes.default_preset(model, exp["dataset"])
                try:
                    recipes.resolve(preset, spec.get("set", {}))
                except SospError as e:
                    raise ConfigError(f"{key_path(at + [key])}: {e}") from None


def check_latency_figure(config):
    """An experiment that asks for accuracy_vs_latency measures latency (has a `latency`
    block), and every experiment its `beside` names is another experiment of the config."""
    names = list(config["experiments"])
    for name, exp in config["experiments"].items():
        if "accuracy_vs_latency" in exp["figures"] and exp["latency"] is None:
            raise ConfigError(
                f"{key_path(['experiments', name, 'figures'])}: accuracy_vs_latency needs the "
                "pruned networks' measured latency; add a latency block to the experiment "
                "(`latency: {}` measures on the config's device)"
            )
        for i, other in enumerate(exp["beside"]):
            if other not in names or other == name:
                others = [n for n in names if n != name]
                raise ConfigError(
                    f"{key_path(['experiments', name, 'beside', i])}: {other!r} is not another "
                    f"experiment of the config{close_to(other, others)}; its experiments: "
                    f"{', '.join(others) or '(none)'}"
                )


def check_runnable(config):
    """The config asks for some work, on a device torch knows, and the published tables it
    sets beside its cells are there."""
    if not (config["experiments"] or config["retraining"]["experiments"] or config["mask_time"]):
        raise ConfigError(
            "no experiments: add one under `experiments:` (config/demo.yaml's `digits` is an "
            "example) or under `retraining: experiments:`"
        )
    if config["device"] != "auto":
        try:
            torch.device(config["device"])
        except (RuntimeError, ValueError):
            raise ConfigError(
                f"{key_path(['device'])}: {config['device']!r} is not a device; "
                "set cpu, cuda, cuda:N or auto"
            ) from None
    there = sorted(p.name for p in Path(workflow.basedir, "results/published").glob("*.csv"))
    for i, name in enumerate(config["published"]):
        if name not in there:
            raise ConfigError(
                f"{key_path(['published', i])}: no file {name!r} in results/published/"
                f"{close_to(name, there)}; there are: {', '.join(there)}"
            )


if not config:  # the embedded default; --configfile FILE replaces it (not merged into it)

    configfile: f"{workflow.basedir}/config/demo.yaml"



try:
    config.setdefault("experiments", {})  # a config of retraining experiments alone
    validate_config(config)
    check_names(config)
    check_recipes(config)
    check_latency_figure(config)
    check_runnable(config)
except ConfigError as e:
    fail(str(e))


# Jobs that measure latency (latency_table, and prune jobs given a table) claim one `timing`
# each; one at a time may run on a machine, so no two time networks side by side (--resources
# timing=N, on the command line or in a profile, allows N). Its scope is local: a cluster's
# jobs each run on their own allocation, and the submitting snakemake does not count them.
resource_scopes:
    timing="local",


if "timing" not in workflow.global_resources:
    workflow.global_resources["timing"] = 1


include: "workflow/rules/resources.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/latency.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/bottlenecks.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/retraining.smk"
include: "workflow/rules/replot.smk"


localrules:
    all,
    import_weights,
    bottlenecks,
    report,
    replot,
    retraining_report,
    gpu_hours,


rule all:
    input:
        REPORT_FILES + figure_files() if config["experiments"] else [],
        RETRAINING_FILES,
        [f"{RESULTS}/fig2_mask_time_vs_width.csv"] if config["mask_time"] else [],
