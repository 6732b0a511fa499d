"""Which MAC-counting convention reproduces the SOSP paper's "alternative MAC count" (CCP's)?

    python benchmarks/ccp_fit.py                     # 2 seeds, both budgets, ~5 min on 1 CPU core
    python benchmarks/ccp_fit.py --seeds 0 --budgets macs

Table 2 of the paper gives eight ImageNet pairs (MACs removed, our count -> alternative count)
for SOSP-H on ResNet-18/50 and SOSP-H* (kernel scaling) on ResNet-50. There are no trained
weights offline, so each network is a randomly initialized torchvision model with BatchNorm
statistics re-estimated on random 224x224 inputs; its SOSP-H mask is cut at the published MAC
reduction (budget macs) or at the published parameter reduction (budget params). Each
candidate convention then counts the pruned network; the table prints published vs ours per
pair and the mean absolute difference per candidate (percentage points). Masks of random
networks differ from the paper's trained ones, so the fit is indicative only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from fractions import Fraction

import torch
import torchvision
from torch import nn

import sosp
from sosp import counting

Shape = tuple[int, ...]
# (arch, kernel_scaling) -> [(params removed %, MACs removed %, alternative MACs removed %)]
PUBLISHED: dict[tuple[str, bool], list[tuple[int, int, int]]] = {
    ("resnet18", False): [(39, 24, 28), (45, 29, 34)],
    # printed "2.44B (27%)": 2.44B of 3.85B is a 37% reduction (every other row's B and % agree)
    ("resnet50", False): [(22, 21, 29), (40, 37, 49), (54, 51, 64)],
    ("resnet50", True): [(30, 28, 36), (49, 45, 56), (61, 59, 72)],
}
SHAPE = (3, 224, 224)
SHORTCUT = ("downsample", "shortcut")


def _per_layer(
    dense: nn.Module, pruned: nn.Module, shape: Shape, macs: Callable[..., Fraction]
) -> int:
    """Sum over dense layers of macs(dense count, kept_in fraction, kept_out fraction)."""
    before, after = counting.layer_counts(dense, shape), counting.layer_counts(pruned, shape)
    total = Fraction(0)
    for name, d in before.items():
        a = after.get(name)
        if a is not None:
            total += macs(d, Fraction(a.in_per_group, d.in_per_group), Fraction(a.out, d.out))
    return round(total)


def out_only(dense: nn.Module, pruned: nn.Module, shape: Shape) -> int:
    """Each layer's dense MACs times its kept output fraction: only the weights into a
    pruned structure count as removed, not the next layer's input side."""
    return _per_layer(dense, pruned, shape, lambda d, ki, ko: d.macs * ko)


def squared_out(dense: nn.Module, pruned: nn.Module, shape: Shape) -> int:
    """Each layer's dense MACs times (kept output fraction)^2: the uniform-ratio formula
    1 - (1 - p)^2 of local pruning applied per layer with that layer's own ratio p."""
    return _per_layer(dense, pruned, shape, lambda d, ki, ko: d.macs * ko * ko)


def additive(dense: nn.Module, pruned: nn.Module, shape: Shape) -> int:
    """Input- and output-side removals added without their overlap (double counting):
    dense MACs times max(0, kept_in + kept_out - 1)."""
    return _per_layer(dense, pruned, shape, lambda d, ki, ko: d.macs * max(0, ki + ko - 1))


def core_denominator(dense: nn.Module, pruned: nn.Module, shape: Shape) -> int:
    """Actual MACs removed, as a fraction of the MACs of the layers between stem and
    classifier without the shortcut convs (returned as the equivalent dense-relative count)."""
    before = counting.layer_counts(dense, shape)
    names = list(before)
    core = sum(
        c.macs
        for n, c in before.items()
        if n not in (names[0], names[-1]) and not any(s in n for s in SHORTCUT)
    )
    total = sum(c.macs for c in before.values())
    removed = total - counting.count_macs(pruned, shape)
    return round(total - Fraction(removed * total, core))


def chain_by_width(dense: nn.Module, pruned: nn.Module, shape: Shape) -> int:
    """Plain-chain count like `counting.ccp_macs`, but each layer's producer is the last
    earlier layer (in run order, shortcut convs included) whose output width is its input
    width; in torchvision's blocks the downsample conv runs after conv3, so it is the
    producer of the next block's conv1."""
    before, after = counting.layer_counts(dense, shape), counting.layer_counts(pruned, shape)
    seen: list[tuple[int, Fraction]] = []
    total = Fraction(0)
    for name, d in before.items():
        ko = Fraction(after[name].out, d.out) if name in after else Fraction(0)
        ki = next((k for w, k in reversed(seen) if w == d.in_per_group), Fraction(1))
        total += d.macs * ko * (ki if d.groups == 1 else 1)
        seen.append((d.out, ko))
    return round(total)


CANDIDATES: dict[str, Callable[[nn.Module, nn.Module, Shape], int]] = {
    "actual": counting.actual_macs,
    "ccp (chain, main path)": counting.ccp_macs,
    "chain by width": chain_by_width,
    "squared out": squared_out,
    "additive": additive,
    "core denominator": core_denominator,
    "out only": out_only,
}


def masks(
    arch: str, kernel_scaling: bool, budget: str, seed: int, n_samples: int, exclude: str
) -> tuple[nn.Module, list[sosp.PruneResult]]:
    """(the recalibrated dense model, SOSP-H results at the published ratios of `budget`)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    x, y = torch.randn(n_samples, *SHAPE), torch.randint(0, 1000, (n_samples,))
    col = 1 if budget == "macs" else 0
    ratios = [pair[col] / 100 for pair in PUBLISHED[(arch, kernel_scaling)]]
    results = sosp.prune_ratios(
        model,
        "sosp_h",
        ratios,
        [(x, y)],
        n_samples=n_samples,
        budget=budget,
        kernel_scaling=kernel_scaling,
        recalibrate_bn=True,
        exclude=None if exclude == "none" else exclude,
        seed=seed,
    )
    dense = torchvision.models.__dict__[arch]()  # counts need only the architecture
    return dense, results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--budgets", nargs="+", default=["macs", "params"], choices=["macs", "params"])
    p.add_argument("--n-samples", type=int, default=8)
    p.add_argument("--exclude", default="resnet_downsample", help="preset/pattern, or none")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    errors: dict[tuple[str, str], list[float]] = {}
    print(
        "| budget | seed | model | published params/MACs -> alt | ours params/MACs | "
        + " | ".join(CANDIDATES)
        + " |"
    )
    print("|---" * (5 + len(CANDIDATES)) + "|")
    for budget in args.budgets:
        for seed in args.seeds:
            for (arch, ks), pairs in PUBLISHED.items():
                dense, results = masks(arch, ks, budget, seed, args.n_samples, args.exclude)
                base = counting.count_macs(dense, SHAPE)
                for (params, macs, alt), r in zip(pairs, results, strict=True):
                    cells = []
                    for name, fn in CANDIDATES.items():
                        ours = 100 * (1 - fn(dense, r.model, SHAPE) / base)
                        errors.setdefault((budget, name), []).append(ours - alt)
                        cells.append(f"{ours:.1f} ({ours - alt:+.1f})")
                    label = f"{arch}{'*' if ks else ''}"
                    rep = r.report
                    mine = f"{100 * rep['params_removed']:.1f}/{100 * rep['macs_removed']:.1f}"
                    print(
                        f"| {budget} | {seed} | {label} | {params}/{macs} -> {alt} | {mine} | "
                        + " | ".join(cells)
                        + " |",
                        flush=True,
                    )
    print("\nmean |ours - published| (mean signed), percentage points, over all pairs and seeds:")
    for (budget, name), errs in errors.items():
        mae = sum(abs(e) for e in errs) / len(errs)
        print(f"  {budget:6s} {name:24s} {mae:5.1f} ({sum(errs) / len(errs):+.1f})")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
