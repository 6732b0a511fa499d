"""The report script's tables beside Table 2: the kernel-scaled variant under its own name, the
best final top-1 of the seeds (Table 2's convention), the alternative MAC count beside ours."""

import importlib.util
import json

import pandas as pd

from tests.workflow.test_workflow import REPO


def _report():
    spec = importlib.util.spec_from_file_location("report", REPO / "workflow/scripts/report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(seed: int, acc: float, kernel_scaling: bool, macs: int, macs_ccp: int) -> dict:
    before = {"params": 1000, "macs": 1000}
    prune = {"ratio": 0.3, "budget": "params", "before": before, "kernel_scaling": kernel_scaling}
    return {
        "experiment": "t2", "model": "resnet50", "dataset": "imagenet", "method": "sosp_h",
        "seed": seed, "test_acc": acc, "params": 700, "macs": macs, "macs_ccp": macs_ccp,
        "checkpoint": f"x{seed}", "prune": prune,
    }  # fmt: skip


def test_table2_cells_use_best_final_top1_and_the_alternative_count(tmp_path):
    """Two seeds of SOSP* at 30% params: the row beside the published SOSP* row at 30% holds
    the better seed's final top-1 and the mean ccp reduction; a plain SOSP-H record is not
    taken for SOSP*."""
    report = _report()
    records = [
        _record(0, 0.75, True, 720, 640),
        _record(1, 0.77, True, 720, 660),
        _record(0, 0.10, False, 720, 640),
    ]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    runs, _ = report.load_records([path])
    assert sorted(set(runs.method)) == ["sosp_h", "sosp_h_kernel_scaled"]
    published = pd.read_csv(REPO / "results/published/sosp2022_table2.csv")
    table = report.published_table(report.summarize(runs), published)
    star = table[table.method == "sosp_h_kernel_scaled"].iloc[0]
    assert star["published acc"] == "76.60" and star["our acc"] == "77.00"
    assert star["published alt. MACs removed"] == "36.00"
    assert star["our ccp MACs removed"].startswith("35.00 ± ")
    assert star["our MACs removed"].startswith("28.00")


def test_published_points_put_ccp_on_its_own_axis():
    """Beside our curves: Table 2's other methods on ResNet-50 (HRank, FPGM) on the params and
    MACs axes; CCP, which counts MACs its own way, only on the alternative-count axis."""
    report = _report()
    published = report.read_published([REPO / "results/published/sosp2022_table2.csv"])

    def points(quantity):
        return report.published_points(published, "resnet50", "imagenet", quantity)

    assert sorted(m for m, _, _ in points("macs")) == ["fpgm", "hrank", "hrank"]
    assert ("hrank", 100 - 36, 74.98) in points("params")
    assert points("ccp_macs") == [("ccp", 100 - 54, 75.21)]
