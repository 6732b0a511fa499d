rule finetune:
    """Train the pruned networks of one ratio, or of all ratios of a prune job when the
    experiment sets group_ratios (the recipe repeats the training schedule unless set)."""
    input:
        lambda wc: f"{RUNS}/prune/{FINETUNE[wc.key]['prune']}/reports.json",
    output:
        f"{RUNS}/finetune/{{key}}/runs.json",
    params:
        cmd=lambda wc: finetune_cmd(wc.key),
    log:
        f"{RUNS}/logs/finetune/{{key}}.log",
    threads: 1
    resources:
        gpu=1,
        runtime=lambda wc: FINETUNE[wc.key]["minutes"],
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} > {log} 2>&1"
