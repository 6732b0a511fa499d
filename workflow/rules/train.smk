rule train:
    """Train the dense network of one (model, dataset, seed, recipe); resumes from its last
    checkpoint. A job with several GPUs runs one process per GPU through torchrun (DDP). An
    expanded network waits for its widths.json."""
    input:
        lambda wc: widths_inputs(DENSE[wc.key].get("widths")),
    output:
        model=str(paths.model(dense_folder("{key}"))),
        metrics=str(paths.metrics(dense_folder("{key}"))),
    params:
        cmd=lambda wc, resources: launch(train_cmd(wc.key), resources),
        workers=lambda wc, threads, resources: workers(threads, resources),
    log:
        f"{RUNS}/logs/train/{{key}}.log",
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} --workers {params.workers} > {log:q} 2>&1"


rule import_weights:
    """Published pretrained weights (an experiment's `weights`), sha256-checked, as the dense
    network's model file. The file is no input: a dry run lists the whole DAG before it is
    downloaded, and the job itself says where to get a missing one."""
    output:
        str(paths.model(pretrained_folder("{key}"))),
    params:
        cmd=lambda wc: import_cmd(wc.key),
    log:
        f"{RUNS}/logs/import/{{key}}.log",
    shell:
        "{params.cmd} > {log:q} 2>&1"
