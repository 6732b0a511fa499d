import json
import os

REPORT_SPEC = {
    name: {"title": exp.get("title", name), "dataset": exp["dataset"], "figures": exp["figures"]}
    for name, exp in config["experiments"].items()
}
RECORDS = [f"{RESULTS}/runs/{key}.json" for key in EVALUATE]


def report_cmd(records):
    """The report script's command line (braces escaped for snakemake's shell formatting)."""
    published = [f"{workflow.basedir}/results/published/{p}" for p in config["published"]]
    args = ["python", f"{workflow.basedir}/workflow/scripts/report.py"]
    args += ["--results", RESULTS, "--figures", FIGURES]
    args += ["--experiments", json.dumps(REPORT_SPEC)]
    args += [arg for path in published for arg in ("--published", path)]
    args += ["--records", *records]
    return shlex.join(args).replace("{", "{{").replace("}", "}}")


rule report:
    """Aggregate every record into CSV, Markdown tables beside the published numbers, and
    figures."""
    input:
        RECORDS,
    output:
        REPORT_FILES + figure_files(),
    log:
        f"{RUNS}/logs/report/{NAME}.log",
    shell:
        report_cmd(RECORDS) + " > {log} 2>&1"


rule replot:
    """Rebuild every table and figure from the config's records already in results/<name>/runs/,
    training nothing: `snakemake replot`."""
    shell:
        report_cmd([path for path in RECORDS if os.path.exists(path)])


rule mask_time:
    """Fig. 2: mask computation time of SOSP-I and SOSP-H against ResNet-56's width."""
    output:
        f"{RESULTS}/fig2_mask_time_vs_width.csv",
    params:
        widths=lambda wc: " ".join(map(str, config["mask_time"]["widths"])),
        n=lambda wc: config["mask_time"]["n_samples"],
        device=lambda wc: config["mask_time"].get("device", "cuda"),
    log:
        f"{RUNS}/logs/mask_time/{NAME}.log",
    threads: rule_threads("mask_time")
    resources:
        **rule_resources("mask_time"),
    shell:
        f"OMP_NUM_THREADS={{threads}} python {workflow.basedir}/benchmarks/mask_time.py "
        "--widths {params.widths} --n-samples {params.n} "
        "--device {params.device} --out {RESULTS}/fig2_mask_time_vs_width > {log} 2>&1"
