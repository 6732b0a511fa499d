# `snakemake replot`: every table and figure again from the results on disk (the committed ones
# of config/demo.yaml), training nothing: the SOSP experiments' (expand-pruning's and the
# gradient-flow study's included) from their records in results/<name>/runs/, the retraining
# study's from results/<name>/retraining/{runs,layers}.csv. An experiment without results is
# skipped, with a line saying so; a config without any ends the run in one line.
import csv
import os
import tempfile


def replot_records():
    """The config's records on disk, in the report rule's order."""
    return [path for path in RECORDS if os.path.exists(path)]


def replot_retraining():
    """The config's retraining experiments with rows in the retraining study's runs.csv."""
    runs, layers = Path(RETRAIN_RESULTS, "runs.csv"), Path(RETRAIN_RESULTS, "layers.csv")
    if not (runs.exists() and layers.exists()):
        return []
    with open(runs, newline="") as f:
        there = {row["experiment"] for row in csv.DictReader(f)}
    return [name for name in RETRAINING.get("experiments", {}) if name in there]


def replot_skipped(records, retraining):
    """The config's experiments that nothing on disk replots (retraining ones prefixed)."""
    have = {Path(path).parent.name for path in records}
    return [name for name in config["experiments"] if name not in have] + [
        f"retraining.{name}" for name in RETRAINING.get("experiments", {}) if name not in retraining
    ]


def replot_check(wildcards):
    """No input (replot reads no file another rule makes, so nothing upstream reruns); where the
    config has no results on disk at all, ends the run in one line saying what to run first (a
    dry run prints that line and goes on)."""
    if not replot_records() and not replot_retraining():
        files = [f"--configfile {shlex.quote(shown(f))}" for f in workflow.overwrite_configfiles]
        run = " ".join(["snakemake", *files])
        message = (
            f"nothing to replot: no records of config {NAME!r} in {RESULTS}/runs/ or "
            f"{RETRAIN_RESULTS}/runs.csv (under {os.getcwd()}); run `{run}` first, which trains "
            "and evaluates them"
        )
        if not workflow.dryrun:
            fail(message)
        print(f"replot: {message}")
    return []


rule replot:
    """Rebuild every table and figure from the config's results already on disk, training
    nothing: `snakemake replot`."""
    input:
        replot_check,
    run:
        records, retraining = replot_records(), replot_retraining()
        skipped = replot_skipped(records, retraining)
        if skipped:
            print(f"replot: skipped {', '.join(skipped)}: no results under {RESULTS}/ yet")
        if records:
            have = {Path(path).parent.name for path in records}
            shell(report_cmd(records, {n: s for n, s in REPORT_SPEC.items() if n in have}))
        if retraining:
            experiments = {n: e for n, e in _retraining_experiments().items() if n in retraining}
            with tempfile.TemporaryDirectory() as tmp:
                spec = Path(tmp, "jobs.json")
                spec.write_text(json.dumps({"experiments": experiments, "runs": []}))
                shell(retraining_report_cmd(spec, "--from-csv"))
