# The SOSP replication workflow: config -> train -> prune -> finetune -> evaluate -> report.
#
#   snakemake --cores all                                   # the embedded demo (config/demo.yaml)
#   snakemake --profile slurm --configfile config/paper.yaml   # the paper, on a SLURM cluster
#   snakemake replot                                        # tables and figures from cached results
#
# Every rule calls the `sosp` command; see README.md.
from snakemake.utils import min_version, validate

min_version("9.0")


if not config:  # the embedded default; --configfile FILE replaces it (not merged into it)

    configfile: f"{workflow.basedir}/config/demo.yaml"



validate(config, f"{workflow.basedir}/workflow/schemas/config.schema.json")


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
