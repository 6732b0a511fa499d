"""`sosp bottlenecks` and `--widths`: masks of a network name its least pruned units as a width
spec; the spec file widens the model for `count`, `train` and `prune`, and every model file made
from a widened network rebuilds it."""

import json

import torch

from sosp import counting, models, paths
from tests.test_cli import run_sosp_here as run_sosp


def _mask(tmp_path, name: str, mask: dict) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"mask": mask, "model": "resnet20", "dataset": "digits"}))
    return str(path)


def test_least_pruned_stage_is_widened_and_the_spec_builds_the_network(tmp_path):
    """Two masks pruning layer1 and layer3 but not layer2: the paper's rule for ResNets widens
    the least pruned stage, layer2, by 2; `sosp count --widths FILE` counts that network."""
    pruned = {"layer1.0.conv1": list(range(8)), "layer3.1.conv1": list(range(30))}
    masks = [_mask(tmp_path, f"m{s}.json", pruned) for s in (0, 1)]
    out = tmp_path / "widths.json"
    r = run_sosp("bottlenecks", "--mask", *masks, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == {"layer2": 2.0}
    assert "stage layer2: 0.0% pruned  -> x2" in r.stdout
    r = run_sosp("count", "--model", "resnet20", "--dataset", "digits", "--widths", str(out),
                 "--json")  # fmt: skip
    wide = models.create("resnet20", 10, 1, 8, widths={"layer2": 2.0})
    assert json.loads(r.stdout) == counting.count(wide, (1, 8, 8)).as_dict()


def test_widened_runs_write_model_files_that_rebuild_the_widened_network(tmp_path):
    """`sosp train --widths layer2=2` records the spec in its config and model file; `sosp prune`
    of that network with the same spec writes a pruned file that loads with the widened shapes."""
    dense = tmp_path / "dense"
    widths = ["--widths", "layer2=2"]
    r = run_sosp("train", "--model", "resnet20", "--dataset", "digits", *widths, "--no-progress",
                 "--set", "epochs=1", "--out", str(dense))  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(paths.model(dense), weights_only=True)
    assert ckpt["widths"] == {"layer2": 2}
    net = paths.load_model(paths.model(dense))
    assert net.layer2[0].conv1.out_channels == 64
    out = tmp_path / "pruned"
    r = run_sosp("prune", "--model", "resnet20", "--dataset", "digits", *widths, "--checkpoint",
                 str(paths.model(dense)), "--ratio", "0.3", "--n-samples", "32", "--no-progress",
                 "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    pruned = paths.load_model(paths.pruned(out))
    assert counting.count_params(pruned) < counting.count_params(net)


def test_a_model_without_widths_is_refused_naming_which_have_them(tmp_path):
    r = run_sosp("count", "--model", "densenet40", "--widths", "*=1.1")
    assert r.returncode == 2 and "width specs exist for the CIFAR ResNets and VGGs" in r.stderr
