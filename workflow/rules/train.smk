rule train:
    """Train the dense network of one (model, dataset, seed, recipe); resumes from last.pt."""
    output:
        model=f"{RUNS}/dense/{{key}}/model.pt",
        metrics=f"{RUNS}/dense/{{key}}/metrics.json",
    params:
        cmd=lambda wc: train_cmd(wc.key),
    log:
        f"{RUNS}/logs/train/{{key}}.log",
    threads: 1
    resources:
        gpu=1,
        runtime=lambda wc: DENSE[wc.key]["minutes"],
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} > {log} 2>&1"
