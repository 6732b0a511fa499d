rule train:
    """Train the dense network of one (model, dataset, seed, recipe); resumes from its last
    checkpoint."""
    output:
        model=str(paths.model(dense_folder("{key}"))),
        metrics=str(paths.metrics(dense_folder("{key}"))),
    params:
        cmd=lambda wc: train_cmd(wc.key),
    log:
        f"{RUNS}/logs/train/{{key}}.log",
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} --workers {threads} > {log} 2>&1"
