rule prune:
    """One saliency computation, a mask and a pruned network per ratio (OUT/<ratio>/)."""
    input:
        lambda wc: (
            widths_inputs(PRUNE[wc.key].get("widths"))
            + ([] if PRUNE[wc.key]["source"] == "init" else [dense_model(PRUNE[wc.key]["source"])])
        ),
    output:
        str(paths.reports(prune_folder("{key}"))),
    params:
        cmd=lambda wc: prune_cmd(wc.key),
    log:
        f"{RUNS}/logs/prune/{{key}}.log",
    threads: rule_threads("prune")
    resources:
        **rule_resources("prune"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} > {log:q} 2>&1"
