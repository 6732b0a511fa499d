import json

REPORT_SPEC = {
    name: {"title": exp.get("title", name), "dataset": exp["dataset"], "figures": exp["figures"]}
    | ({"beside": exp["beside"]} if exp["beside"] else {})
    for name, exp in config["experiments"].items()
}
RECORDS = [f"{RESULTS}/runs/{key}.json" for key in EVALUATE]


def report_cmd(records, experiments=None):
    """The report script's command line on `records` for `experiments` (default: every one
    of the config's; name -> title, dataset, figures and, where set, the experiments its
    accuracy_vs_latency figure draws beside its own)."""
    published = [f"{workflow.basedir}/results/published/{p}" for p in config["published"]]
    args = ["python", f"{workflow.basedir}/workflow/scripts/report.py"]
    args += ["--results", RESULTS, "--figures", FIGURES]
    args += ["--experiments", json.dumps(REPORT_SPEC if experiments is None else experiments)]
    args += [arg for path in published for arg in ("--published", path)]
    args += ["--records", *records]
    return shell_words(args)


def mask_time_cmd():
    """Fig. 2's timing script's command line."""
    spec = config["mask_time"]
    args = ["python", f"{workflow.basedir}/benchmarks/mask_time.py"]
    args += ["--widths", *map(str, spec["widths"]), "--n-samples", str(spec["n_samples"])]
    args += ["--device", spec.get("device", "cuda")]
    return shlex.join(args + ["--out", f"{RESULTS}/fig2_mask_time_vs_width"])


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
        report_cmd(RECORDS) + " > {log:q} 2>&1"


rule mask_time:
    """Fig. 2: mask computation time of SOSP-I and SOSP-H against ResNet-56's width."""
    output:
        f"{RESULTS}/fig2_mask_time_vs_width.csv",
    params:
        cmd=lambda wc: mask_time_cmd(),
    log:
        f"{RUNS}/logs/mask_time/{NAME}.log",
    threads: rule_threads("mask_time")
    resources:
        **rule_resources("mask_time"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} > {log:q} 2>&1"
