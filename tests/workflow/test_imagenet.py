"""Table 2's pipeline end to end on real JPEGs the test writes (Imagenette's layout, 10 classes,
64-128 px): published weights imported by their sha256, pruned by SOSP-H with kernel scaling
(SOSP*), fine-tuned one epoch, evaluated and reported; and the full Table 2 DAG."""

import csv
import hashlib
import re

import torch

from sosp import data, models
from tests.workflow.test_workflow import REPO, snakemake, write_config

CONFIG = """
name: jpeg
device: cpu
data_root: {root}
resources: {{default: {{cpus_per_task: 1, gpu: 0}}}}
experiments:
  table2_star:
    dataset: imagenette
    models: [resnet18]
    weights: {{resnet18: {{file: {weights}, sha256: {sha256}}}}}
    methods: [sosp_h]
    ratios: [0.3]
    seeds: [0]
    budget: params
    kernel_scaling: true
    mac_conventions: [ccp]
    n_samples: 8
    batch_size: 8
    finetune: {{preset: imagenet, set: {{epochs: 1, batch_size: 8, lr: 0.01}}}}
    figures: [before_after]
"""


def test_imported_weights_prune_finetune_evaluate_report(tmp_path):
    """import (sha256-checked) -> SOSP* prune -> one epoch -> evaluate -> report: the table holds
    the dense and the pruned cell, the pruned one named as the kernel-scaled variant, with the
    alternative (ccp) MAC count above the actual one, as on Table 2."""
    data.write_jpeg_folder(tmp_path / "data", classes=10, per_class=(4, 2))
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-imagenette.pth"
    torch.save(models.create("resnet18", 10, 3, 224).state_dict(), weights)
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    text = CONFIG.format(root=tmp_path / "data", weights=weights, sha256=sha256)
    r = snakemake(tmp_path, "--cores", "2", "--configfile", str(write_config(tmp_path, text)))
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "results/jpeg/summary.csv") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"dense", "sosp_h_kernel_scaled"}
    star = rows["sosp_h_kernel_scaled"]
    assert 25 < float(star["params_removed_mean"]) < 35
    assert float(star["macs_ccp_removed_mean"]) > float(star["macs_removed_mean"]) > 0
    assert "ccp MACs removed (%)" in (tmp_path / "results/jpeg/tables.md").read_text()
    assert (tmp_path / "figures/jpeg/table2_star_before_after.png").exists()
    assert not list((tmp_path / "runs").glob("dense/*")), "imported weights are not trained"


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
