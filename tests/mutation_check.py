"""Mutation check: does the test suite pin every formula of SOSP-I / SOSP-H (and of the
gradient-flow measures)?

Copies the repository's tracked files into a temporary directory, runs the selected tests there
once unmutated (all must pass), then applies each mutation of MUTATIONS below on its own, reruns
the tests and records which fail. A mutation that leaves every test passing is a surviving
mutant: the suite does not pin what it breaks. The working tree is never touched.

Run from the repository root (takes long: every mutation reruns the whole selection):

    .venv/bin/python tests/mutation_check.py             # all mutations
    .venv/bin/python tests/mutation_check.py --only 7 GF1  # some (plus the unmutated run)

Prints a Markdown table (mutation | what it breaks | failing tests) and exits 1 if a mutant
survives, 2 if the unmutated run fails or a mutation no longer matches the source.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TESTS = (
    "tests/test_curvature.py",
    "tests/test_gates.py",
    "tests/test_channel_rules.py",
    "tests/test_structures.py::test_every_function_and_method_rule_serves_analysis_and_surgery",
    "tests/methods",
    "tests/baselines/test_ablations.py",
    "tests/test_batchnorm.py",
    "tests/test_api.py::test_kernel_scaling_divides_saliency_by_kernel_side",
    "tests/test_api.py::test_kernel_scaling_on_resnet50_divides_by_1_3_and_7",
    "tests/test_surgery.py::test_zeroing_theta_s_is_the_removal_surgery_applies",
    "tests/test_surgery.py::test_soft_mask_equals_surgery_behind_a_batchnorm_without_affine",
    "tests/test_selection.py",
    "tests/baselines/test_gradient_flow.py",
)


@dataclass(frozen=True)
class Edit:
    """Replace `old` (which must occur exactly once in `file`) by `new`."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutation:
    id: str
    breaks: str
    edits: tuple[Edit, ...]
    extra_tests: tuple[str, ...] = ()


GF = "baselines/gradient_flow.py"
SOSP_I = "sosp/methods/sosp_i.py"
SOSP_H = "sosp/methods/sosp_h.py"
CURV = "sosp/curvature.py"
GATES = "sosp/gates.py"
STRUCT = "sosp/structures.py"
RULES = "sosp/channel_rules/ops.py"
MODULE_RULES = "sosp/channel_rules/modules.py"
EVAL_IMPORT = Edit(
    CURV,
    "from sosp.modes import eval_mode\n",
    "import contextlib\nfrom sosp.modes import eval_mode\n",
)
EVAL_BODY = """    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag
"""
OLD_EVAL_BODY = """    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)
"""
FIG4_CIFAR10 = """  fig4_cifar10:
    title: "Fig. 4, first-order ablation, CIFAR-10"
    tags: [fig4]
    dataset: cifar10
    models: [resnet56, vgg19]
"""
VGG_CAP = (
    "    model_settings: {vgg19: {max_layer_fraction: 0.95}}  # the paper caps VGG layers at 95%\n"
)
H_SCORES = "terms.lambda1.abs() + 0.5 * terms.h_theta.abs()"

MUTATIONS = (
    Mutation(
        "1",
        "SOSP-I Eq. 3: |G| becomes G",
        (Edit(SOSP_I, "q = 0.5 * gn.G.abs()", "q = 0.5 * gn.G"),),
    ),
    Mutation(
        "2",
        "SOSP-I Eq. 3: factor 1 instead of 1/2 on |G|",
        (Edit(SOSP_I, "q = 0.5 * gn.G.abs()", "q = 1.0 * gn.G.abs()"),),
    ),
    Mutation(
        "3",
        "SOSP-I Eq. 3: |lambda_1| becomes lambda_1",
        (Edit(SOSP_I, "q += gn.lambda1.abs().diag()", "q += gn.lambda1.diag()"),),
    ),
    Mutation(
        "4",
        "SOSP-H Eq. 7: factor 1 instead of 1/2 on the Hessian term",
        (Edit(SOSP_H, H_SCORES, "terms.lambda1.abs() + 1.0 * terms.h_theta.abs()"),),
    ),
    Mutation(
        "5",
        "SOSP-H Eq. 7: |.| dropped on the Hessian term",
        (Edit(SOSP_H, H_SCORES, "terms.lambda1.abs() + 0.5 * terms.h_theta"),),
    ),
    Mutation(
        "6",
        "SOSP-H Eq. 7: |.| dropped on lambda_1",
        (Edit(SOSP_H, H_SCORES, "terms.lambda1 + 0.5 * terms.h_theta.abs()"),),
    ),
    Mutation(
        "7",
        "G: J^T diag(p) J loses the sqrt (becomes J^T diag(p^2) J)",
        (Edit(CURV, "(J * prob.sqrt()[:, :, None])", "(J * prob[:, :, None])"),),
    ),
    Mutation(
        "8",
        "G: the -p p^T part of the cross-entropy output Hessian dropped",
        (Edit(CURV, "return A.T @ A - V.T @ V, lambda1", "return A.T @ A, lambda1"),),
    ),
    Mutation(
        "9",
        "SOSP-I curvature computed in the model's own (train) mode, not eval mode",
        (
            EVAL_IMPORT,
            Edit(
                CURV,
                "eval_mode(graph.gm),\n        _gated_forms(graph, twice=False),",
                "contextlib.nullcontext(),\n        _gated_forms(graph, twice=False),",
            ),
        ),
    ),
    Mutation(
        "10",
        "SOSP-H curvature computed in the model's own (train) mode, not eval mode",
        (
            EVAL_IMPORT,
            Edit(
                CURV,
                "eval_mode(graph.gm),\n        gated(graph) as gates,",
                "contextlib.nullcontext(),\n        gated(graph) as gates,",
            ),
        ),
    ),
    Mutation(
        "11",
        "SOSP*: divide by the kernel area instead of the kernel side",
        (Edit(STRUCT, "float(w[0, 0].numel()) ** 0.5 if", "float(w[0, 0].numel()) if"),),
    ),
    Mutation(
        "12",
        "no BatchNorm recalibration for pruning at initialization",
        (Edit("sosp/api.py", "    if not recalibrate:\n", "    if True:\n"),),
        ("tests/commands/test_prune.py::test_pruning_at_initialization_recalibrates_batchnorm",),
    ),
    Mutation(
        "13",
        "theta_s gates a BatchNorm without affine parameters (nothing to remove there)",
        (
            Edit(
                STRUCT,
                "if layer.bn is not None and _has_params(self.modules[layer.bn]):",
                "if layer.bn is not None:",
            ),
            Edit(
                GATES,
                "widths = [m.weight.shape[0] for m in modules]",
                "widths = [len(sl.channels) for sl in theta]",
            ),
        ),
    ),
    Mutation(
        "14",
        "theta_s without the consumer slices (DenseNet concatenation, MobileNet depthwise)",
        (Edit(STRUCT, "for consumer in self.consumers:", "for consumer in []:"),),
    ),
    Mutation(
        "15",
        "Eq. 4 greedy selection: factor 2 on the off-diagonal Q dropped",
        (
            Edit(
                "sosp/selection.py",
                "self.step_weight = q, 2 * weight",
                "self.step_weight = q, weight",
            ),
        ),
    ),
    Mutation(
        "16",
        "G not averaged over the N' samples (1/N' dropped)",
        (
            Edit(
                CURV,
                "return GaussNewton(n, lambda1 / n, G / n)",
                "return GaussNewton(n, lambda1 / n, G)",
            ),
        ),
    ),
    Mutation(
        "17",
        "eval_mode restores only the top-level train flag, not every submodule's",
        (Edit("sosp/modes.py", EVAL_BODY, OLD_EVAL_BODY),),
    ),
    Mutation(
        "18",
        "config/paper.yaml: fig4_cifar10 prunes VGG-19 without the 95% layer cap",
        (Edit("config/paper.yaml", FIG4_CIFAR10 + VGG_CAP, FIG4_CIFAR10),),
        ("tests/workflow/test_workflow.py::test_shipped_configs_prune_as_the_paper_does",),
    ),
    Mutation(
        "G1",
        "gate derivatives: d(grad_gamma)/d(x) dropped from the double backward",
        (
            Edit(
                GATES,
                "            d_x = grad * (w if k == 1 else 2 * w)",
                "            d_x = None and grad",
            ),
        ),
    ),
    Mutation(
        "G2",
        "gate derivatives: d(grad_x)/d(gamma) dropped from the double backward",
        (
            Edit(
                GATES,
                "        if d_grad_x is not None:  # d(grad * gamma^k)/dgamma = k grad\n",
                "        if False:\n",
            ),
        ),
    ),
    Mutation(
        "G3",
        "gate derivatives: d(grad_gamma)/d(grad) dropped from the double backward",
        (
            Edit(
                GATES,
                "d_grad = u * w if d_grad is None else torch.addcmul(d_grad, u, w)",
                "d_grad = d_grad",
            ),
        ),
    ),
    Mutation(
        "G4",
        "BatchNorm folded for the gated passes with the running mean added, not subtracted",
        (
            Edit(
                GATES,
                'shift = -bound["running_mean"] * scale',
                'shift = bound["running_mean"] * scale',
            ),
        ),
    ),
    Mutation(
        "G5",
        "folded BatchNorm's backward does not scale the gradient",
        (
            Edit(
                GATES, "        return grad * scale, None, None", "        return grad, None, None"
            ),
        ),
    ),
    Mutation(
        "G6",
        "constant conv: the transposed conv of its backward without the output padding",
        (
            Edit(
                GATES,
                "            size - ((g - 1) * s - 2 * p + d * (k - 1) + 1)\n",
                "            0 * size\n",
            ),
        ),
    ),
    Mutation(
        "Q1",
        "quadratic gate (a writer and its BatchNorm): its second derivative 2 (x - b) dropped",
        (
            Edit(
                GATES, "                e = d_x * torch.add(x, nb)\n", "                e = None\n"
            ),
        ),
    ),
    Mutation(
        "Q2",
        "quadratic gate: its first derivative taken as x, not 2x - b",
        (Edit(GATES, "u = x if nb is None else torch.add(nb, x, alpha=2)", "u = x"),),
    ),
    Mutation(
        "Q3",
        "quadratic gate: the BatchNorm's shift b with the running mean added, not subtracted",
        (
            Edit(
                GATES,
                "torch.addcmul(-bias, mean, scale)",
                "torch.addcmul(-bias, -mean, scale)",
            ),
        ),
    ),
    Mutation(
        "R1",
        "ReLU of the gated passes: its double backward passes the gradient through unmasked",
        (
            Edit(
                GATES,
                "        return torch.ops.aten.threshold_backward(d, y, 0), None",
                "        return d, None",
            ),
        ),
    ),
    Mutation(
        "V1",
        "attention surgery keeps every input of its qkv",
        (
            Edit(
                MODULE_RULES,
                "        m.qkv = linear.shrink(m.qkv, list(range(m.qkv.out_features)), in_idx)\n",
                "",
            ),
        ),
    ),
    Mutation(
        "V2",
        "the soft mask of an attention block leaves its output rows",
        (
            Edit(
                MODULE_RULES,
                "slice_params(getattr(m, self.proj)):\n            p[channels] = 0",
                "slice_params(getattr(m, self.proj)):\n            pass",
            ),
        ),
    ),
    Mutation(
        "V3",
        "a class token and a position embedding give their channels no never-pruned source",
        (
            Edit(
                RULES,
                "                srcs.append(walk.constants(len(srcs[0])))",
                "                pass",
            ),
            Edit(
                RULES,
                "out = [s | c for s, c in zip(sx, walk.constants(len(sx)), strict=True)]",
                "out = list(sx)",
            ),
        ),
    ),
    Mutation(
        "V4",
        "attention for the second derivative without the 1/sqrt(d) scale",
        (Edit(CURV, "scale = q.shape[-1] ** -0.5 if scale is None else scale", "scale = 1.0"),),
    ),
    Mutation(
        "V5",
        "tokens concatenated with a class token scattered along dim 1, not the channels",
        (
            Edit(
                RULES,
                "            _scatter_operands(gm, node, kept, -1)",
                "            _scatter_operands(gm, node, kept, 1)",
            ),
        ),
    ),
    Mutation(
        "V6",
        "a position embedding's sum scatters its tokens along dim 1, not the channels",
        (
            Edit(
                RULES,
                "            _scatter_operands(gm, node, kept, dim)\n            return",
                "            _scatter_operands(gm, node, kept, 1)\n            return",
            ),
        ),
    ),
    Mutation(
        "V7",
        "a position embedding added to feature maps [B, C, H, W] is scattered along the last dim",
        (Edit(RULES, "    return 1 if fits else None", "    return -1 if fits else None"),),
    ),
    Mutation(
        "V8",
        "a reshape of a map's trailing dims keeps its literal channel count after surgery",
        (
            Edit(
                "sosp/channel_rules/views.py",
                "                node.args = (node.args[0], *_with_channels(node.args[1:], "
                "len(kept[node.name])))\n",
                "                pass\n",
            ),
        ),
    ),
    Mutation(
        "M1",
        "nn.MultiheadAttention lets pruning narrow the query its input projection reads",
        (Edit(MODULE_RULES, "    reads_whole = True\n", "    reads_whole = False\n"),),
    ),
    Mutation(
        "M2",
        "nn.MultiheadAttention's explicit form (SOSP-H's second derivatives) without the scale",
        (
            Edit(
                CURV,
                "weights = _attention_weights(q, k)",
                "weights = _attention_weights(q, k, 1.0)",
            ),
        ),
    ),
    Mutation(
        "N1",
        "a GroupNorm after surgery forgets its group's pruned channels (zeros) in the variance",
        (
            Edit(
                "sosp/shortcuts.py",
                "(squares + missing * flat.shape[2] * (sums / count).square()) / count",
                "squares / count",
            ),
        ),
    ),
    Mutation(
        "N2",
        "a difference of feature maps that keep different channels is not scattered",
        (
            Edit(
                RULES,
                '        _scatter_operands(gm, node, kept, node.meta.get("channel_dim", 1))',
                "        return",
            ),
        ),
    ),
    Mutation(
        "N3",
        "a layer scale's reshape to a traced constant shape keeps the old channel count",
        (
            Edit(
                RULES,
                "*_with_count(n.args[1:], channels, len(kept[node.name]))",
                "*n.args[1:]",
            ),
        ),
    ),
    Mutation(
        "H1",
        "surgery keeps the number of attention heads when heads are pruned",
        (Edit(RULES, "node.args = (x, len(kept[node.name]) // dim, dim, *rest)", "return"),),
    ),
    Mutation(
        "H2",
        "a head's q, k and v channels are not one structure",
        (
            Edit(
                RULES,
                "walk.link(frozenset().union(*(head(h, d) for d in range(dim))) for h in",
                "walk.link([] for h in",
            ),
        ),
    ),
    Mutation(
        "GF1",
        "loss preservation: |theta . g| of the filter instead of sum_i |theta_i g_i|",
        (Edit(GF, "lambda t, g: (t * g).abs().sum(1)", "lambda t, g: (t * g).sum(1).abs()"),),
    ),
    Mutation(
        "GF2",
        "proposed measure: theta instead of theta^2 (plain loss preservation)",
        (Edit(GF, "(t * t * g).abs().sum(1)", "(t * g).abs().sum(1)"),),
    ),
    Mutation(
        "GF3",
        "GraSP: |theta . Hg| instead of the signed theta . Hg",
        (Edit(GF, "lambda t, v: (t * v).sum(1))", "lambda t, v: (t * v).sum(1).abs())"),),
    ),
    Mutation(
        "GF4",
        "gradient-flow measures: the temperature ignored",
        (Edit(CURV, "model(x) / temperature", "model(x)"),),
    ),
    Mutation(
        "GF5",
        "gradient-flow measures: g not restricted to the entries a mask keeps",
        (Edit(CURV, "grad = [_kept(g / n, k)", "grad = [(g / n).detach()"),),
    ),
    Mutation(
        "GF6",
        "gradient-flow measures: H g summed over samples, not averaged",
        (Edit(CURV, "_kept(h / n, k)", "_kept(h, k)"),),
    ),
)

SUMMARY = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$")


class CheckError(Exception):
    """The check itself cannot be trusted: stale mutation, broken copy or unmutated failure."""


def copy_repo(dest: Path) -> None:
    """Copy the tracked files (working-tree content, symlinks as symlinks) into `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
    ).stdout
    for name in filter(None, listed.split("\0")):
        src, dst = REPO / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)


def child_env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports(root: Path) -> None:
    """`import sosp` (and `baselines`) inside the copy must load the copy, not the checkout."""
    code = "import sosp, baselines; print(sosp.__file__); print(baselines.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=child_env(root),
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(root.resolve()):
            raise CheckError(f"the copy imports {path}, not a file under {root}")


def check_edit(root: Path, edit: Edit) -> None:
    count = (root / edit.file).read_text().count(edit.old)
    if count != 1:
        raise CheckError(f"stale mutation: {edit.old!r} occurs {count} times in {edit.file}")


def apply(root: Path, mutation: Mutation) -> dict[Path, str]:
    """Apply every edit of `mutation`; return the original text of each file it changed."""
    originals: dict[Path, str] = {}
    for edit in mutation.edits:
        path = root / edit.file
        originals.setdefault(path, path.read_text())
        check_edit(root, edit)
        path.write_text(path.read_text().replace(edit.old, edit.new))
    return originals


def restore(originals: dict[Path, str]) -> None:
    for path, text in originals.items():
        path.write_text(text)


def failing_tests(output: str) -> list[str]:
    """Test ids from pytest's short summary (`-rfE`), without the leading `tests/`."""
    names = []
    for line in output.splitlines():
        match = SUMMARY.match(line)
        if match:
            names.append(match.group(2).removeprefix("tests/"))
    return names


def run_tests(root: Path, tests: tuple[str, ...]) -> list[str]:
    """Run pytest in the copy; return the failing tests (empty when all pass)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    r = subprocess.run(cmd, cwd=root, env=child_env(root), capture_output=True, text=True)
    failed = failing_tests(r.stdout)
    if (r.returncode not in (0, 1) and not failed) or (r.returncode == 0 and failed):
        raise CheckError(f"pytest exited {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    if r.returncode == 1 and not failed:
        raise CheckError(f"pytest failed but named no test:\n{r.stdout[-3000:]}")
    return failed


def tests_for(mutation: Mutation) -> tuple[str, ...]:
    return TESTS + mutation.extra_tests


def run_mutation(root: Path, mutation: Mutation) -> list[str]:
    originals = apply(root, mutation)
    try:
        return run_tests(root, tests_for(mutation))
    finally:
        restore(originals)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def row(mutation: Mutation, failed: list[str]) -> str:
    files = ", ".join(sorted({f"`{e.file}`" for e in mutation.edits}))
    cell = f"{len(failed)}: " + ", ".join(f"`{n}`" for n in failed) if failed else "0 **SURVIVED**"
    cells = (f"{mutation.id} ({files})", mutation.breaks, cell)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table(results: list[tuple[Mutation, list[str]]]) -> str:
    lines = ["| mutation | what it breaks | failing tests |", "|---|---|---|"]
    return "\n".join(lines + [row(m, failed) for m, failed in results])


def check_all(root: Path, selected: list[Mutation]) -> list[tuple[Mutation, list[str]]]:
    """Unmutated run (all of the tests any selected mutation uses must pass), then each one."""
    for mutation in selected:
        for edit in mutation.edits:
            check_edit(root, edit)
    check_imports(root)
    extras = dict.fromkeys(t for m in selected for t in m.extra_tests)
    start = time.monotonic()
    failed = run_tests(root, TESTS + tuple(extras))
    if failed:
        raise CheckError("the unmutated copy fails: " + ", ".join(failed))
    log(f"unmutated: all pass ({time.monotonic() - start:.0f} s)")
    results = []
    for mutation in selected:
        start = time.monotonic()
        failed = run_mutation(root, mutation)
        log(f"mutation {mutation.id}: {len(failed)} failing ({time.monotonic() - start:.0f} s)")
        results.append((mutation, failed))
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        metavar="ID",
        nargs="+",
        choices=[m.id for m in MUTATIONS],
        help="run only the mutations with these ids (default: all of them)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    selected = [m for m in MUTATIONS if args.only is None or m.id in args.only]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sosp-mutants-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        try:
            results = check_all(root, selected)
        except CheckError as e:
            log(f"error: {e}")
            return 2
    print(table(results))
    survivors = [m.id for m, failed in results if not failed]
    print(f"\nwall time: {time.monotonic() - start:.0f} s")
    if survivors:
        print(f"surviving mutants: {', '.join(survivors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
