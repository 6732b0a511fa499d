"""Table 2's pipeline end to end on real JPEGs (the `end_to_end` run of conftest.py: Imagenette's
layout, 10 classes, 64-128 px): published weights imported by their sha256, pruned by SOSP-H
with kernel scaling (SOSP*), fine-tuned one epoch, evaluated and reported; and the full Table 2
DAG."""

import csv
import re

import pytest

from tests.workflow.test_workflow import REPO, RUNS_DIR, snakemake


@pytest.mark.xdist_group("end_to_end")  # one worker runs the shared snakemake run
def test_imported_weights_prune_finetune_evaluate_report(end_to_end):
    """import (sha256-checked) -> SOSP* prune -> one epoch -> evaluate -> report: the table holds
    the dense and the pruned cell, the pruned one named as the kernel-scaled variant, with the
    alternative (ccp) MAC count above the actual one, as on Table 2."""
    tmp_path, _ = end_to_end
    with open(tmp_path / "results/tiny/summary.csv") as f:
        rows = {
            row["method"]: row for row in csv.DictReader(f) if row["experiment"] == "table2_star"
        }
    assert set(rows) == {"dense", "sosp_h_kernel_scaled"}
    star = rows["sosp_h_kernel_scaled"]
    assert 25 < float(star["params_removed_mean"]) < 35
    assert float(star["macs_ccp_removed_mean"]) > float(star["macs_removed_mean"]) > 0
    assert "ccp MACs removed (%)" in (tmp_path / "results/tiny/tables.md").read_text()
    assert (tmp_path / "figures/tiny/table2_star_before_after.png").exists()
    assert list((tmp_path / RUNS_DIR).glob("pretrained/resnet18-imagenette-pretrained-*"))
    trained = {p.name.split("-")[0] for p in (tmp_path / RUNS_DIR).glob("dense/*")}
    assert trained == {"resnet20"}, "imported weights are not trained"


def test_table2_dag_is_complete_before_anything_is_downloaded(tmp_path):
    """`snakemake -n` on config/imagenet.yaml lists every Table 2 job without the weights or
    ImageNet present: 2 imports, prune jobs of 2 seeds per (model, method variant), one
    fine-tuning per ratio and seed, run through torchrun on 4 GPUs."""
    r = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config/imagenet.yaml"))
    assert r.returncode == 0, r.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", r.stdout, re.M))
    # SOSP-H: 2 + 3 ratios, SOSP*: 3, SOSP-I sampled: 2 + 3, exact SOSP-I: 2; x 2 seeds
    assert counts["finetune"] == str(2 * (5 + 3 + 5 + 2))
    assert counts["import_weights"] == "2"
    assert "torchrun --standalone --nproc-per-node 4 -m sosp finetune" in r.stdout
    assert "--convention ccp" in r.stdout
