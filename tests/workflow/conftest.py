"""One snakemake run shared by the end-to-end tests (each run pays seconds of start-up per
job, and the two experiments' chains run side by side on two cores): the tiny digits config
plus Table 2's pipeline on real JPEGs the fixture writes (Imagenette's layout, 10 classes,
64-128 px) from published-style weights given by file and sha256. Its folder and its runs_dir
hold a space, so every rule's shell command runs on quoted paths."""

import hashlib

import pytest
import torch

from sosp import data, models
from tests.workflow.test_workflow import RUNS_DIR, TINY_ONE_CPU, snakemake, write_config

# SOSP* (kernel scaling) on ResNet-18 from imported weights, with the alternative MAC count
JPEG_EXPERIMENT = """  table2_star:
    dataset: imagenette
    models: [resnet18]
    weights: {{resnet18: {{file: {weights}, sha256: {sha256}}}}}
    methods: [sosp_h]
    ratios: [0.3]
    seeds: [0]
    budget: params
    kernel_scaling: true
    mac_conventions: [ccp]
    n_samples: 4
    batch_size: 4
    finetune: {{preset: imagenet, set: {{epochs: 1, batch_size: 10, lr: 0.01}}}}
    figures: [before_after]
"""


@pytest.fixture(scope="session")
def end_to_end(tmp_path_factory):
    """(the run's folder, its config file) after `snakemake --cores 2` finished."""
    tmp_path = tmp_path_factory.mktemp("end to end")
    data.write_jpeg_folder(tmp_path / "data", classes=10, per_class=(2, 1))
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-imagenette.pth"
    torch.save(models.create("resnet18", 10, 3, 224).state_dict(), weights)
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    text = TINY_ONE_CPU.replace(
        "device: cpu\n", f"device: cpu\ndata_root: {tmp_path / 'data'}\nruns_dir: {RUNS_DIR}\n"
    )
    text += JPEG_EXPERIMENT.format(weights=weights, sha256=sha256)
    cfg = write_config(tmp_path, text)
    r = snakemake(tmp_path, "--cores", "2", "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path, cfg
