"""`--batch-size auto` (`sosp.batch_size`): the batch is the largest whose measured memory
fits the budget, the measurement is linear in the samples, and a prune with the chosen size
equals one given that size by hand."""

import json

import pytest
import torch

from sosp import batch_size, methods, models
from sosp.structures import analyze
from tests.test_cli import run_sosp_here


def test_fitting_batch_size_is_the_largest_that_fits_within_one_and_most():
    """fixed + per_sample * B <= budget at the B returned and not at B + 1; at least 1 when
    nothing fits, at most `most`, and `most` when a pass costs nothing per sample."""
    assert batch_size.fitting_batch_size(100, 30, 400, 1000) == 10
    assert batch_size.fitting_batch_size(100, 30, 399, 1000) == 9
    assert batch_size.fitting_batch_size(100, 30, 50, 1000) == 1
    assert batch_size.fitting_batch_size(100, 30, 10**9, 64) == 64
    assert batch_size.fitting_batch_size(100, 0, 50, 64) == 64


@pytest.mark.parametrize("method", ["sosp_h", "sosp_i"])
def test_saved_bytes_grow_exactly_linearly_with_the_samples(method):
    """On the CPU the probe measures the storages autograd saves: a fixed part (weights the
    constant-parameter convs save) plus the same bytes for each further sample, so two probes
    predict every batch size."""
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(10, (8,))
    graph = analyze(model, (1, 8, 8))

    def run(b):
        methods.get(method)(methods.Context(model, graph, [(x[:b], y[:b])], "cross_entropy", b))

    got = [batch_size.probe_bytes(run, b, torch.device("cpu")) for b in (1, 2, 4, 8)]
    per_sample = got[1] - got[0]
    assert per_sample > 0 and got[0] > per_sample
    assert got == [got[0] + per_sample * (b - 1) for b in (1, 2, 4, 8)]


def test_the_chosen_batch_fits_the_budget_and_one_more_sample_would_not(monkeypatch):
    """With 20 MiB free (budget: half on the CPU) SOSP-H on ResNet-20 gets the batch whose
    measured bytes fit and whose next size does not; the chosen size is reported."""
    monkeypatch.setattr(batch_size, "free_bytes", lambda _device: 20 * 2**20)
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    x, y = torch.randn(2, 1, 8, 8), torch.randint(10, (2,))
    chosen = batch_size.for_method(model, "sosp_h", (x, y))
    assert chosen.budget_bytes == 10 * 2**20 and chosen.measured == "saved tensors"
    b = chosen.batch_size
    assert 1 < b < 1000
    used = chosen.fixed_bytes + chosen.per_sample_bytes * b
    assert used <= chosen.budget_bytes < used + chosen.per_sample_bytes
    assert f"batch size auto: {b} samples per pass on cpu" in chosen.line(torch.device("cpu"))


def test_prune_with_auto_batches_as_with_that_size_given(tmp_path, monkeypatch):
    """`sosp prune --batch-size auto` says the size it chose, records it in the report, and
    prunes exactly as the same command with that size given (the samples' order does not
    depend on the batch size)."""
    monkeypatch.setattr(batch_size, "free_bytes", lambda _device: 6 * 2**20)
    common = ["prune", "--model", "resnet20", "--dataset", "digits", "--ratio", "0.3"]
    common += ["--n-samples", "64", "--device", "cpu", "--no-progress"]
    auto = run_sosp_here(*common, "--batch-size", "auto", "--out", str(tmp_path / "a"))
    assert auto.returncode == 0, auto.stderr
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    b = report["batch_size"]
    assert auto.stdout.startswith(f"batch size auto: {b} samples per pass on cpu")
    assert 1 < b < 64
    given = run_sosp_here(*common, "--batch-size", str(b), "--out", str(tmp_path / "g"))
    assert given.returncode == 0, given.stderr
    masks = [json.loads((tmp_path / f / "mask.json").read_text()) for f in ("a", "g")]
    assert masks[0] == masks[1]
    assert json.loads((tmp_path / "g" / "report.json").read_text())["batch_size"] == b
