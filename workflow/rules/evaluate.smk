rule evaluate:
    """Records of one cell (experiment, model, method, seed): test accuracy before and after
    fine-tuning, best accuracy seen, params, MACs, per-layer pruned fractions, the prune report."""
    input:
        lambda wc: EVALUATE[wc.key]["inputs"],
    output:
        f"{RESULTS}/runs/{{key}}.json",
    wildcard_constraints:
        key="[A-Za-z0-9_]+/[A-Za-z0-9_.-]+",
    params:
        cmd=lambda wc: evaluate_cmd(wc.key),
    log:
        f"{RUNS}/logs/evaluate/{NAME}/{{key}}.log",
    threads: rule_threads("evaluate")
    resources:
        **rule_resources("evaluate"),
    shell:
        "OMP_NUM_THREADS={threads} {params.cmd} > {log:q} 2>&1"
