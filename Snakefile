# The SOSP replication workflow: config -> train -> prune -> finetune -> evaluate -> report.
#
#   snakemake --cores all                                   # the embedded demo (config/demo.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml   # the paper, on a SLURM cluster
#   snakemake replot                                        # tables and figures from cached results
#
# Every rule calls the `sosp` command; see README.md.
import json
import tempfile
from pathlib import Path

from snakemake.utils import min_version, validate

from sosp.settings import PruneSettings, ratio_schema

min_version("9.0")

# The prune settings an experiment sets (and model_settings/method_settings override); their
# schema, defaults included, comes from sosp.settings.PruneSettings. Each is part of every prune
# job's hashed settings (common.smk): a name added here renames every prune run folder.
SELECTION_SETTINGS = ("budget", "scope", "max_layer_fraction", "kernel_scaling", "n_samples")
# Settings an experiment (or an override) may set, hashed into a prune job's settings only
# where set, so that adding one renames no existing run folder.
OPTIONAL_SETTINGS = ("coupling", "round_to")


def config_schema():
    """workflow/schemas/config.schema.json completed from sosp.settings: each experiment's
    selection settings with their defaults, $defs/selection_settings without (an override
    names only what differs), and $defs/ratio."""
    path = Path(workflow.basedir, "workflow/schemas/config.schema.json")
    schema = json.loads(path.read_text())
    defs = schema["$defs"]
    defs["ratio"] = ratio_schema()
    every = SELECTION_SETTINGS + OPTIONAL_SETTINGS
    defs["selection_settings"] = PruneSettings.json_schema(every, defaults=False)
    experiment = PruneSettings.json_schema(SELECTION_SETTINGS)["properties"]
    experiment.update(PruneSettings.json_schema(OPTIONAL_SETTINGS, defaults=False)["properties"])
    defs["experiment"]["properties"].update(experiment)
    return schema


def validate_config(config):
    """Check `config` against `config_schema()` and fill in its defaults (snakemake's
    `validate` reads a schema only from a file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "config.schema.json")
        path.write_text(json.dumps(config_schema()))
        validate(config, str(path))


if not config:  # the embedded default; --configfile FILE replaces it (not merged into it)

    configfile: f"{workflow.basedir}/config/demo.yaml"



validate_config(config)


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    report,
    replot,


rule all:
    input:
        REPORT_FILES + figure_files(),
        [f"{RESULTS}/fig2_mask_time_vs_width.csv"] if config["mask_time"] else [],
