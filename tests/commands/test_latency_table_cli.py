"""`sosp latency-table` as a user types it: it writes a table, keeps one measured here, refuses
one of another torch unless --force; `sosp prune --budget latency` reads it and prints the
predicted and measured latency."""

import json

from sosp import models
from sosp.latency_table import LatencyTable
from sosp.structures import analyze
from tests.latency_nets import mac_like, with_grids
from tests.test_cli import run_sosp_here

QUICK = ("--batch-size", "2", "--step", "8", "--repeats", "1", "--warmup", "0", "--no-progress")
MODEL = ("--model", "resnet20", "--dataset", "digits")


def latency_table(out, *more):
    return run_sosp_here("latency-table", *MODEL, *QUICK, "--out", str(out), *more)


def test_latency_table_writes_keeps_and_refuses_another_torch_unless_forced(tmp_path):
    """The first call measures and writes a table of resnet20 on digits (what it was measured
    on and the network recorded); a second call with the same setup keeps it ("kept it",
    file unchanged); a table whose measured_on names another torch version is refused with
    one line and exit 2, the file untouched, unless --force measures it again here."""
    out = tmp_path / "t.json"
    first = latency_table(out)
    assert first.returncode == 0, first.stderr
    assert f"Wrote {out}" in first.stdout
    table = LatencyTable.load(out)
    assert table.network == {"model": "resnet20", "dataset": "digits", "widths": None}
    assert table.input_shape == [1, 8, 8] and table.step == 8
    assert table.measured_on["batch"] == 2 and table.measured_on["fold_bn"] is True
    written = out.read_text()

    again = latency_table(out)
    assert again.returncode == 0, again.stderr
    assert "kept it" in again.stdout and "Wrote" not in again.stdout
    assert out.read_text() == written

    doc = json.loads(written)
    doc["measured_on"]["torch"] = "1.0.0"
    out.write_text(json.dumps(doc))
    edited = out.read_text()
    refused = latency_table(out)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "1.0.0" in lines[0] and "--force" in lines[0], refused.stderr
    assert out.read_text() == edited

    forced = latency_table(out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert LatencyTable.load(out).measured_on["torch"] == table.measured_on["torch"]


def test_prune_to_a_latency_budget_prints_predicted_and_measured(tmp_path):
    """`sosp prune --budget latency --latency-table T` (a table measured by the command, its
    grids then made deterministic) prints a latency line with the predicted and the
    measured ms, and report.json holds a predicted removal of at least the ratio."""
    table_file = tmp_path / "t.json"
    assert latency_table(table_file).returncode == 0
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    graph = analyze(model, (1, 8, 8))
    with_grids(LatencyTable.load(table_file), graph, mac_like).save(table_file)
    out = tmp_path / "run"
    r = run_sosp_here(
        "prune", *MODEL, "--method", "magnitude", "--ratio", "0.3", "--n-samples", "32",
        "--budget", "latency", "--latency-table", str(table_file), "--no-progress",
        "--latency-corrections", "0", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("latency"))
    assert "predicted" in line and "measured" in line and "ms" in line
    report = json.loads((out / "report.json").read_text())
    assert report["latency"]["predicted_removed"] >= 0.3 - 1e-12


def test_latency_budget_without_a_table_is_one_line(tmp_path):
    """`sosp prune --budget latency` without --latency-table exits 2 with one line naming the
    missing table, and writes nothing."""
    out = tmp_path / "run"
    r = run_sosp_here("prune", *MODEL, "--ratio", "0.3", "--budget", "latency", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "latency" in lines[0] and "table" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
