"""The agreement check of `make demo`: a re-run's cell agrees with the committed one when their
means differ by at most the 95% Welch t quantile times the standard error of the difference,
at least the floor; cells the reference lacks are counted apart."""

import importlib.util
import math
import subprocess
import sys

import pandas as pd
import pytest

from tests.workflow.test_workflow import REPO

SCRIPT = REPO / "workflow/scripts/agreement.py"


def _agreement():
    spec = importlib.util.spec_from_file_location("agreement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(rows: list[tuple[str, float, float, float, int]]) -> pd.DataFrame:
    """A summary.csv of (method, ratio, acc_mean, acc_std, seeds) rows of one model."""
    return pd.DataFrame(
        [
            {"experiment": "digits", "model": "resnet20", "dataset": "digits", "method": m,
             "prune_at": "trained", "ratio": r, "acc_mean": mean, "acc_std": std, "seeds": n}
            for m, r, mean, std, n in rows
        ]
    )  # fmt: skip


REFERENCE = _cells(
    [
        ("sosp_h", 0.4, 98.0, 0.5, 3),  # the re-run moves 0.6 < 2.776 * 0.408: agrees
        ("random", 0.8, 90.0, 1.0, 3),  # moves 5.0 > 2.776 * 0.816: differs
        ("magnitude", 0.4, 98.61, 0.0, 3),  # no spread either side: the floor, 0.28 <= 0.5
        ("magnitude", 0.8, 97.0, 0.0, 3),  # no spread either side: 1.0 > 0.5
        ("c_obd", 0.8, 95.0, 0.0, 3),  # spread on one side only: 2 dof, 4.303 * 1.155
    ]
)
RERUN = _cells(
    [
        ("sosp_h", 0.4, 98.6, 0.5, 3),
        ("random", 0.8, 95.0, 1.0, 3),
        ("magnitude", 0.4, 98.33, 0.0, 3),
        ("magnitude", 0.8, 98.0, 0.0, 3),
        ("c_obd", 0.8, 99.9, 2.0, 3),
        ("sosp_i", 0.4, 97.0, 0.3, 3),  # not in the reference
    ]
)


def test_each_cell_is_judged_by_its_seeds_spread_with_a_floor():
    """An agreeing cell, one moved past its spread, a zero-spread cell within the floor and one
    past it, a cell with spread on one side (Welch's 2 degrees of freedom: 4.30 * se), and a cell
    the reference lacks (not judged); the tolerances are the t quantile times se."""
    rows = _agreement().compare(REFERENCE, RERUN, floor=0.5).set_index(["method", "ratio"])
    assert rows["agrees"].to_dict() == {
        ("sosp_h", 0.4): True,
        ("random", 0.8): False,
        ("magnitude", 0.4): True,
        ("magnitude", 0.8): False,
        ("c_obd", 0.8): True,
        ("sosp_i", 0.4): None,
    }
    se_equal = math.sqrt(2 * 0.5**2 / 3)
    assert rows.loc[("sosp_h", 0.4), "tolerance"] == pytest.approx(2.7764 * se_equal, rel=1e-4)
    assert rows.loc[("c_obd", 0.8), "tolerance"] == pytest.approx(4.3027 * 2 / 3**0.5, rel=1e-4)
    assert rows.loc[("magnitude", 0.8), "tolerance"] == 0.5
    assert rows.loc[("random", 0.8), "difference"] == pytest.approx(5.0)


def test_one_seed_has_no_spread_and_the_floor_is_the_least_tolerance():
    """A cell of one seed (std NaN) against one of three without spread is judged by the
    floor alone; a floor above t * se wins."""
    agreement = _agreement()
    assert agreement.tolerance(math.nan, 1, 0.0, 3, floor=0.5) == 0.5
    assert agreement.tolerance(0.1, 3, 0.1, 3, floor=2.0) == 2.0


def test_make_demo_line_and_csv(tmp_path):
    """The script as `make demo` runs it: agreement.csv with one row per re-run cell, the
    differing cells listed, and the last line counting the agreeing judged cells; --snapshot
    makes a summary the reference, which it then agrees with in every cell."""
    summary, reference, out = tmp_path / "summary.csv", tmp_path / "ref.csv", tmp_path / "a.csv"
    RERUN.to_csv(summary, index=False)
    REFERENCE.to_csv(reference, index=False)
    argv = [sys.executable, str(SCRIPT), "--summary", str(summary), "--reference", str(reference)]
    r = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, check=True)
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == (
        "3 of 5 cells agree with the committed records within their seeds' spread "
        "(1 not in the reference)"
    )
    assert sum("differs: digits resnet20" in line for line in lines) == 2
    assert len(pd.read_csv(out)) == len(RERUN)
    subprocess.run([*argv, "--snapshot"], capture_output=True, check=True)
    r = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert r.stdout.startswith("6 of 6 cells agree with the committed records"), r.stdout


def test_a_missing_reference_is_one_line_naming_the_fix(tmp_path):
    """No reference file: exit status 2 with one line that says to make one with --snapshot,
    and no agreement.csv written."""
    RERUN.to_csv(tmp_path / "summary.csv", index=False)
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary", str(tmp_path / "summary.csv"),
         "--reference", str(tmp_path / "none.csv"), "--out", str(tmp_path / "a.csv")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--snapshot" in r.stderr and not (tmp_path / "a.csv").exists()
