rule bottlenecks:
    """Expand-pruning: the units the seeds' masks barely prune, as the width spec that widens
    them (`sosp bottlenecks`)."""
    input:
        lambda wc: BOTTLENECKS[wc.key]["reports"],
    output:
        widths_file("{key}"),
    params:
        cmd=lambda wc: bottlenecks_cmd(wc.key),
    log:
        f"{RUNS}/logs/bottlenecks/{{key}}.log",
    shell:
        "{params.cmd} > {log:q} 2>&1"
