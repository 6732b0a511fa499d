"""Does a re-run agree with the committed records? Cell by cell, within the seeds' spread.

    python workflow/scripts/agreement.py --summary results/demo/summary.csv \
        --reference results/demo/reference.csv --out results/demo/agreement.csv
    python workflow/scripts/agreement.py --summary results/demo/summary.csv \
        --reference results/demo/reference.csv --snapshot    # the summary becomes the reference

A cell (experiment, model, dataset, method, prune_at, ratio) of the re-run's summary.csv agrees
with the same cell of the reference when its mean final test accuracy differs by at most

    tolerance = max(t * se, floor),   se = sqrt(s_ref^2 / n_ref + s_new^2 / n_new)

in points of accuracy: s and n are each side's standard deviation over seeds and number of
seeds, t the two-sided 95% quantile of Student's t with Welch-Satterthwaite degrees of freedom
(4.30 for 3 seeds against 3 with all spread on one side, 2.78 with equal spreads), and `floor`
(default 0.5 points, about two of the 360 digits test images) the least difference that
counts, also where no seed differs (se = 0). That is Welch's t-test at 5%: a machine whose
floating-point sums round differently trains other networks, as another seed would, so a
re-run disagrees where it moved further than the seeds scatter. A cell with one seed has no
spread (s = 0). Cells of the re-run that the reference lacks are counted apart, not judged.

Writes --out (one row per cell of the re-run: both means, spreads and seed counts, the
difference, the tolerance, whether it agrees) and prints the disagreeing cells, then
"N of M cells agree with the committed records within their seeds' spread".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import CELL  # noqa: E402 (beside this script)

from sosp.io import atomic_write_text  # noqa: E402

METRIC = "acc"  # final test accuracy (%), as summary.csv holds it
COLUMNS = [f"{METRIC}_mean", f"{METRIC}_std", "seeds"]


def tolerance(s_ref: float, n_ref: int, s_new: float, n_new: int, floor: float) -> float:
    """The largest |difference of means| (points) that two cells' seeds explain: t * se, at
    least `floor` (see the module docstring). A NaN spread (one seed) counts as 0."""
    a = (0.0 if math.isnan(s_ref) else s_ref) ** 2 / n_ref
    b = (0.0 if math.isnan(s_new) else s_new) ** 2 / n_new
    if a + b == 0:
        return floor
    dof = (a + b) ** 2 / (
        (a**2 / (n_ref - 1) if n_ref > 1 else 0.0) + (b**2 / (n_new - 1) if n_new > 1 else 0.0)
    )
    return max(float(stats.t.ppf(0.975, dof)) * math.sqrt(a + b), floor)


def compare(reference: pd.DataFrame, summary: pd.DataFrame, floor: float = 0.5) -> pd.DataFrame:
    """One row per cell of `summary` (its CELL columns, then ref_/new_ mean, std, seeds, the
    difference new - ref, the tolerance and `agrees`: True, False, or None where `reference`
    lacks the cell)."""
    ref = reference[CELL + COLUMNS].rename(columns=_prefixed("ref"))
    new = summary[CELL + COLUMNS].rename(columns=_prefixed("new"))
    rows = new.merge(ref, on=CELL, how="left")
    rows["difference"] = rows["new_mean"] - rows["ref_mean"]
    rows["tolerance"] = [
        tolerance(r.ref_std, r.ref_seeds, r.new_std, r.new_seeds, floor)
        if not math.isnan(r.ref_mean)
        else math.nan
        for r in rows.itertuples()
    ]
    judged = rows["ref_mean"].notna()
    agrees = rows["difference"].abs() <= rows["tolerance"]
    rows["agrees"] = agrees.astype(object).where(judged, None)
    return rows


def _prefixed(side: str) -> dict[str, str]:
    return dict(zip(COLUMNS, [f"{side}_mean", f"{side}_std", f"{side}_seeds"], strict=True))


def verdict(rows: pd.DataFrame) -> str:
    """The closing line: how many judged cells agree, and how many the reference lacks."""
    judged = rows["agrees"].notna()
    agree = int((rows["agrees"] == True).sum())  # noqa: E712 (an object column: None, True, False)
    line = (
        f"{agree} of {int(judged.sum())} cells agree with the committed records within their "
        "seeds' spread"
    )
    missing = int((~judged).sum())
    return line + (f" ({missing} not in the reference)" if missing else "")


def disagreements(rows: pd.DataFrame) -> list[str]:
    """One line per disagreeing cell: the cell, both means with their spreads, the tolerance."""
    out = []
    for r in rows[rows["agrees"] == False].itertuples():  # noqa: E712
        out.append(
            f"  differs: {r.experiment} {r.model} {r.method} {r.prune_at} ratio {r.ratio:g}: "
            f"{r.new_mean:.2f} ± {_std(r.new_std)} (re-run, {r.new_seeds} seeds) against "
            f"{r.ref_mean:.2f} ± {_std(r.ref_std)} ({r.ref_seeds} seeds), "
            f"|difference| {abs(r.difference):.2f} > {r.tolerance:.2f}"
        )
    return out


def _std(s: float) -> str:
    return "0.00" if math.isnan(s) else f"{s:.2f}"


def read(path: Path, what: str, fix: str) -> pd.DataFrame:
    """The CSV at `path`, or exit 2 with one line saying what is missing and how to fix it."""
    if not path.is_file():
        fail(f"no {what} {path}; {fix}")
    frame = pd.read_csv(path)
    missing = [c for c in CELL + COLUMNS if c not in frame.columns]
    if missing:
        fail(f"{path} lacks the columns {', '.join(missing)}; {fix}")
    return frame


def fail(message: str) -> None:
    """Exit 2 with `message` as one line, as `sosp` reports a user error."""
    print(f"agreement.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--summary", type=Path, required=True, help="the re-run's summary.csv")
    p.add_argument("--reference", type=Path, required=True, help="the committed cells")
    p.add_argument("--out", type=Path, help="agreement.csv to write")
    p.add_argument("--floor", type=float, default=0.5, help="least tolerance, points (0.5)")
    p.add_argument("--snapshot", action="store_true", help="write --summary's cells as --reference")
    args = p.parse_args()
    summary = read(args.summary, "summary", "run the workflow first (make demo)")
    if args.snapshot:
        atomic_write_text(args.reference, summary[CELL + COLUMNS].to_csv(index=False))
        print(f"{len(summary)} cells of {args.summary} -> {args.reference}")
        return
    reference = read(args.reference, "reference", "make one from a summary with --snapshot")
    rows = compare(reference, summary, args.floor)
    if args.out:
        atomic_write_text(args.out, rows.to_csv(index=False))
    print("\n".join([*disagreements(rows), verdict(rows)]))


if __name__ == "__main__":
    main()
