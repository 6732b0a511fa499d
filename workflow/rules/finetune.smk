rule finetune:
    """Train the pruned networks of one ratio, or of all ratios of a prune job when the
    experiment sets group_ratios (the recipe repeats the training schedule unless set)."""
    input:
        lambda wc: str(paths.reports(prune_folder(FINETUNE[wc.key]["prune"]))),
    output:
        str(paths.runs(finetune_folder("{key}"))),
    params:
        cmd=lambda wc, resources: launch(finetune_cmd(wc.key), resources),
        workers=lambda wc, threads, resources: workers(threads, resources),
    log:
        f"{RUNS}/logs/finetune/{{key}}.log",
    threads: rule_threads("finetune")
    resources:
        **rule_resources("finetune"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} --workers {params.workers} > {log:q} 2>&1"
