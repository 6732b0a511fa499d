rule latency_table:
    """What each operation of one network costs on one setup (device, precision, layout,
    batch) at each count of kept channels: `sosp latency-table`, for the prune jobs of the
    experiments whose `latency` block names that setup. As those prune jobs do, it claims a
    `timing` (the Snakefile allows one at a time) and every core as its threads (nothing runs
    beside it), and it computes on their CPUs (resources.smk: INHERITS), so its table holds
    for their thread count."""
    input:
        lambda wc: widths_inputs(LATENCY[wc.key].get("widths")),
    output:
        latency_file("{key}"),
    params:
        cmd=lambda wc: latency_table_cmd(wc.key),
        threads=thread_env("latency_table"),  # OMP_NUM_THREADS (and MKL's where it times)
    log:
        f"{RUNS}/logs/latency_table/{{key}}.log",
    threads: timing_threads("latency_table")  # every core: nothing runs beside it
    resources:
        **rule_resources("latency_table"),
    shell:
        "{params.threads} {params.cmd} > {log:q} 2>&1"
