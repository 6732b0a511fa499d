"""`sosp retrain` and `sosp train --sparse` end to end on digits: the files they write, the
counts in sparsity.json against the saved network, the schedule taken from the dense run, and
the messages for bad input."""

import json

import pytest
import torch

from sosp import data, paths, unstructured
from sosp.train import lr_at
from tests.test_cli import run_sosp_here

DEVICE = ["--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    quick = ["--set", "epochs=2", "batch_size=256"]
    r = run_sosp_here("train", "--model", "vgg11_quarter", "--dataset", "digits", *quick,
                      *DEVICE, "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_retrain_iterative_writes_a_mask_counts_and_follows_the_training_schedule(dense, tmp_path):
    """2 cycles of 1 epoch by CLR to 0.8 under ERK: the model file's mask matches its zeros, the
    counts in sparsity.json are those of the saved network, the lr of each epoch is CLR's of
    the dense run's recipe, and each pruning's accuracy is recorded."""
    out = tmp_path / "imp"
    r = run_sosp_here("retrain", "--checkpoint", str(paths.model(dense)), "--sparsity", "0.8",
                      "--allocation", "erk", "--schedule", "clr", "--budget", "1", "--cycles",
                      "2", "--set", "batch_size=256", *DEVICE, "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = paths.read_model_file(paths.model(out))
    net = paths.model_from_file(ckpt)
    mask = unstructured.mask_of(ckpt)
    for name, w in unstructured.prunable(net).items():
        assert not w[~mask[name]].any()
    counts = json.loads(paths.sparsity(out).read_text())
    want = unstructured.counts(net, data.info("digits").input_shape)
    layers = want.pop("layer_sparsity")
    assert {k: counts[k] for k in want} == pytest.approx(want)
    assert counts["layer_sparsity"] == pytest.approx(layers)
    assert counts["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert [p["sparsity"] for p in counts["prunings"]] == pytest.approx([1 - 0.2**0.5, 0.8])
    metrics = json.loads(paths.metrics(out).read_text())
    recipe = metrics["config"]["recipe"]
    assert recipe["original"] == json.loads(paths.metrics(dense).read_text())["config"]["recipe"]
    from sosp.commands.retrain import from_dict

    rebuilt = from_dict(recipe)
    assert [row["lr"] for row in metrics["epochs"]] == pytest.approx(
        [lr_at(rebuilt, 0), lr_at(rebuilt, 1)]
    )


def test_train_with_gmp_ends_at_the_sparsity(tmp_path):
    """`sosp train --sparse gmp --sparsity 0.7` over 4 epochs (pruning every epoch) ends with 70%
    of the prunable weights zero and the mask in the model file."""
    out = tmp_path / "gmp"
    r = run_sosp_here("train", "--model", "vgg11_quarter", "--dataset", "digits", "--set",
                      "epochs=4", "batch_size=256", "--sparse", "gmp", "--sparsity", "0.7",
                      *DEVICE, "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    counts = json.loads(paths.sparsity(out).read_text())
    assert counts["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert len(counts["prunings"]) == 3 and counts["has_mask"]
    ckpt = torch.load(paths.model(out), weights_only=True)
    assert unstructured.MODEL_FILE_KEY in ckpt


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sparsity", "1.5"], "must lie in \\(0, 1\\)"),
        (["--sparsity", "0.5", "--schedule", "lrw", "--budget", "5"], "at most 2"),
        ([], "holds no weight mask: give --sparsity"),
    ],
)
def test_bad_retrain_input_says_the_fix(dense, tmp_path, args, message):
    """A sparsity outside (0, 1), rewinding past training, or no sparsity for a dense network
    stops with a message naming the fix."""
    budget = [] if "--budget" in args else ["--budget", "1"]
    r = run_sosp_here("retrain", "--checkpoint", str(paths.model(dense)), *args, *budget,
                      *DEVICE, "--out", str(tmp_path / "x"))  # fmt: skip
    assert r.returncode != 0
    assert __import__("re").search(message, r.stderr), r.stderr
