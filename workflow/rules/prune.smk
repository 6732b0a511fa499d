rule prune:
    """One saliency computation, a mask and a pruned network per ratio (OUT/<ratio>/); with a
    latency table (an experiment's `latency`), each pruned network's latency measured."""
    input:
        lambda wc: (
            widths_inputs(PRUNE[wc.key].get("widths"))
            + ([] if PRUNE[wc.key]["source"] == "init" else [dense_model(PRUNE[wc.key]["source"])])
            + ([PRUNE[wc.key]["latency_table"]] if "latency_table" in PRUNE[wc.key] else [])
        ),
    output:
        str(paths.reports(prune_folder("{key}"))),
    params:
        cmd=lambda wc: prune_cmd(wc.key),
        threads=thread_env("prune"),  # OMP_NUM_THREADS (and MKL's where it times)
    log:
        f"{RUNS}/logs/prune/{{key}}.log",
    threads: timing_threads("prune")  # a job that times: every core, nothing beside it
    resources:
        **rule_resources("prune"),
    shell:
        "{params.threads} {params.cmd} > {log:q} 2>&1"
