"""Every bad input to a command ends in one line naming what is wrong and how to fix it, exit
code 2, and nothing written: each row runs the real `sosp` command on files of one tiny digits
run (trained for one epoch, pruned once), shared by the module."""

import json
import os

import pytest
import torch

from sosp import cli, models
from sosp.errors import BadInput
from sosp.selection import Saliency
from tests.test_cli import run_sosp_here as run_sosp


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits resnet20 trained one epoch (last.pt, model.pt), pruned by magnitude at 0.3
    (mask.json, pruned.pt), and files that are wrong in one way each."""
    root = tmp_path_factory.mktemp("bad_input")
    dense, pruned = root / "dense", root / "pruned"
    digits = ["--model", "resnet20", "--dataset", "digits"]
    train = ["train", *digits, "--no-progress", "--device", "cpu", "--set", "epochs=1"]
    assert cli.main([*train, "batch_size=128", "--out", str(dense)]) == 0
    prune = ["prune", *digits, "--checkpoint", str(dense / "model.pt"), "--method", "magnitude"]
    assert cli.main([*prune, "--ratio", "0.3", "--n-samples", "32", "--out", str(pruned)]) == 0
    torch.save(torch.load(dense / "model.pt")["state_dict"], root / "state.pt")
    torch.save(models.create("resnet32", 10, 1, 8).state_dict(), root / "resnet32.pt")
    ckpt = torch.load(dense / "model.pt")
    ckpt["state_dict"]["fc.weight"][0, 0] = float("nan")
    torch.save(ckpt, root / "nan.pt")
    (root / "a_file").write_text("not a folder")
    (root / "bad.yaml").write_text("epochs: [1\n")
    (root / "empty.yaml").write_text("")
    return root


PRUNE = ["prune", "--model", "resnet20", "--dataset", "digits", "--method", "magnitude"]
DENSE = "{root}/dense/model.pt"
MASK = "{root}/pruned/mask.json"
SOSP_H = [*PRUNE[:-1], "sosp_h", "--checkpoint", DENSE, "--n-samples", "8"]
COUNT = ["count", "--model", "resnet20", "--dataset", "digits"]
TRAIN = ["train", "--model", "resnet20", "--dataset", "digits", "--no-progress", "--device",
         "cpu", "--set", "epochs=1", "--out", "{out}"]  # fmt: skip
BOTTLENECKS = ["bottlenecks", "--mask", MASK, "--out", "{out}/widths.json"]
IMPORT = ["import", "--model", "resnet20", "--dataset", "digits", "--weights", "{root}/state.pt",
          "--out", "{out}"]  # fmt: skip

# (what is wrong, the command line ({root}: the fixture's folder), what the message says)
ROWS = [
    (
        "evaluate a training checkpoint",
        ["evaluate", "--checkpoint", "{root}/dense/last.pt", "--out", "{out}/eval.json"],
        "is a training checkpoint (last.pt: weights and optimizer state for resuming), not a "
        "model file; pass {root}/dense/model.pt",
    ),
    (
        "evaluate a plain state dict",
        ["evaluate", "--checkpoint", "{root}/state.pt", "--out", "{out}/eval.json"],
        "is not a model file written by sosp (model.pt, pruned.pt) but a plain state dict (",
    ),
    (
        "evaluate a mask",
        ["evaluate", "--checkpoint", MASK, "--out", "{out}/eval.json"],
        "is a mask (JSON), not a model file; pass the pruned.pt written beside it",
    ),
    (
        "count a resnet20 mask as resnet32",
        ["count", "--model", "resnet32", "--mask", MASK],
        "belongs to resnet20, not --model resnet32",
    ),
    (
        "count a digits mask on cifar10",
        ["count", "--model", "resnet20", "--dataset", "cifar10", "--mask", MASK],
        "was computed on digits, not cifar10; pass --dataset digits",
    ),
    (
        "prune a checkpoint of another architecture",
        [*PRUNE, "--checkpoint", "{root}/resnet32.pt", "--ratio", "0.3", "--out", "{out}"],
        "does not fit the model resnet20: 72 unexpected keys (layer1.3.conv1.weight, ",
    ),
    (
        "a device name that is none",
        [*PRUNE, "--checkpoint", DENSE, "--device", "gpu0", "--ratio", "0.3", "--out", "{out}"],
        "--device 'gpu0' is not a device; pass cpu, cuda, cuda:N or auto",
    ),
    (
        "cuda without a GPU",
        [*PRUNE, "--checkpoint", DENSE, "--device", "cuda", "--ratio", "0.3", "--out", "{out}"],
        "--device cuda: no CUDA GPU is visible",
    ),
    (
        "an --out below a file",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.3", "--out", "{root}/a_file/run"],
        "a_file is a file, not a folder",
    ),
    (
        "a ratio given twice",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.5", "0.5", "--out", "{out}"],
        "--ratio 0.5 is given twice",
    ),
    (
        "two ratios named alike",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.3", "0.30000001", "--out", "{out}"],
        "--ratio 0.3 and 0.30000001 would both be written to",
    ),
    (
        "prune a checkpoint holding NaN",
        [*PRUNE, "--checkpoint", "{root}/nan.pt", "--ratio", "0.3", "--out", "{out}"],
        "holds non-finite values: fc.weight has 1 NaN or infinite entries of 640",
    ),
    (
        "prune with batch size 0",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.3", "--batch-size", "0", "--out", "{out}"],
        "--batch-size must be at least 1, not 0",
    ),
    (
        "evaluate with batch size 0",
        ["evaluate", "--checkpoint", DENSE, "--batch-size", "0", "--out", "{out}/eval.json"],
        "--batch-size must be at least 1, not 0",
    ),
    (
        "a method option of the wrong type",
        [*SOSP_H, "--ratio", "0.3", "--option", "hessian=maybe", "--out", "{out}"],
        "method 'sosp_h' option hessian must be true or false, not 'maybe'",
    ),
    (
        "an invalid recipe file",
        [*TRAIN, "--recipe-file", "{root}/bad.yaml"],
        "bad.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' at line 2",
    ),
    (
        "an empty recipe file",
        [*TRAIN, "--recipe-file", "{root}/empty.yaml"],
        "empty.yaml is empty; write recipe keys in it, e.g. epochs: 10",
    ),
    (
        "a negative prune seed",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.3", "--seed", "-1", "--out", "{out}"],
        "--seed must be at least 0, not -1",
    ),
    ("a negative training seed", [*TRAIN, "--seed", "-1"], "--seed must be at least 0, not -1"),
    (
        "a width multiplier that rounds widths to none",
        [*COUNT, "--widths", "*=0.01"],
        "width spec *=0.01 makes a layer of 16 channels 0.16 channels wide, which rounds to none",
    ),
    (
        "an absurd width multiplier",
        [*COUNT, "--widths", "*=1e6"],
        "width multiplier of '*' must be > 0 and at most 16, not 1000000.0",
    ),
    (
        "a width unit given twice",
        [*COUNT, "--widths", "layer2=2", "layer2=3"],
        "--widths gives layer2 twice; keep one",
    ),
    (
        "a width unit without its multiplier",
        [*COUNT, "--widths", "layer2"],
        "--widths layer2: no such file; pass UNIT=MULT items (e.g. layer2=2 or '*=1.1')",
    ),
    (
        "a sparsity of 0",
        [*TRAIN, "--sparsity", "0"],
        "--sparsity must lie in (0, 1), not 0.0",
    ),
    (
        "a sparsity without gmp",
        [*TRAIN, "--sparse", "str", "--sparsity", "0.5"],
        "--sparsity is the final sparsity of --sparse gmp; add --sparse gmp",
    ),
    (
        "a retraining sparsity of 0",
        ["retrain", "--checkpoint", DENSE, "--sparsity", "0", "--budget", "1", "--out", "{out}"],
        "--sparsity must lie in (0, 1), not 0.0",
    ),
    (
        "a bottleneck count of 0",
        [*BOTTLENECKS, "--count", "0"],
        "bottleneck count must be a whole number of units, at least 1, not 0",
    ),
    (
        "a bottleneck multiplier of 0",
        [*BOTTLENECKS, "--multiplier", "0"],
        "bottleneck multiplier must be > 0 and at most 16, not 0.0",
    ),
    (
        "a sha256 of 6 digits",
        [*IMPORT, "--sha256", "0676ba"],
        "--sha256 '0676ba' is not a sha256: pass its first 8 to 64 hex digits (0-9, a-f)",
    ),
    (
        "a sha256 that is not hex",
        [*IMPORT, "--sha256", "resnet50-0676ba61"],
        "--sha256 'resnet50-0676ba61' is not a sha256",
    ),
    (
        "a ratio beyond what every layer keeping one structure allows",
        [*PRUNE, "--checkpoint", DENSE, "--ratio", "0.999", "--n-samples", "8", "--out", "{out}"],
        "no mask can prune 783 of 784 structures: every layer keeps at least one structure (more "
        "with max_layer_fraction or round_to) and excluded layers keep all, so at most 763 can "
        "go; pass a ratio of at most 0.973",
    ),
]


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args, says", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, args, says):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    before = _snapshot(run)
    r = run_sosp(*(a.format(root=run, out=out) for a in args))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 400, r.stderr
    assert lines[0].startswith(f"sosp {args[0]}: error: ")
    assert says.format(root=run) in lines[0]
    assert not out.exists()
    assert _snapshot(run) == before  # the inputs untouched, nothing written beside them


def test_exclude_patterns_that_match_nothing_are_warned_about(run, tmp_path):
    """`--exclude` patterns that match no conv or linear layer prune as if not given (a config
    gives one list to several models, so this is no error) but a one-line warning names them
    and how patterns match; a preset is not warned about."""
    out = tmp_path / "out"
    args = [*PRUNE, "--checkpoint", DENSE.format(root=run), "--ratio", "0.3", "--n-samples", "8"]
    r = run_sosp(*args, "--exclude", "layer1", "nothing*", "resnet_downsample", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == (
        "sosp prune: warning: --exclude pattern(s) 'layer1', 'nothing*' match no conv or linear "
        "layer of resnet20, so they exclude nothing; a pattern matches whole layer names such "
        "as 'conv1', 'fc' (fnmatch: 'layer1.*' for a stage)"
    )
    assert (out / "mask.json").is_file()
    r = run_sosp(*args, "--exclude", "layer1.*", "--out", str(tmp_path / "out2"))
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_computing(run, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = run_sosp(*PRUNE, "--checkpoint", DENSE.format(root=run), "--ratio", "0.3", "--out", str(ro))
    assert r.returncode == 2 and "cannot be written" in r.stderr, r.stderr
    assert list(ro.iterdir()) == []


def test_mask_counts_on_its_own_dataset_and_old_masks_still_count(run, tmp_path, capsys):
    """Without --dataset a mask is counted on the dataset recorded in it (digits, not the
    model's cifar10); a mask written before the model, dataset and input shape were recorded
    is counted unchecked."""
    doc = json.loads((run / "pruned" / "mask.json").read_text())
    assert (doc["model"], doc["dataset"], doc["input_shape"]) == ("resnet20", "digits", [1, 8, 8])
    report = json.loads((run / "pruned" / "report.json").read_text())
    assert (
        cli.main(["count", "--model", "resnet20", "--mask", MASK.format(root=run), "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out) == report["after"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"exclude": None, "mask": doc["mask"]}))
    assert (
        cli.main(["count", "--model", "resnet20", "--dataset", "digits", "--mask", str(old)]) == 0
    )
    assert f"{report['after']['params']:,} params" in capsys.readouterr().out


def test_nan_saliencies_are_counted_per_structure():
    """A NaN in one pair of Q spoils two structures, not entries of the S x S matrix."""
    q = torch.eye(4)
    q[0, 1] = q[1, 0] = float("nan")
    with pytest.raises(BadInput, match="NaN or infinite saliencies for 2 of 4 structures"):
        Saliency(q=q).check_finite("sosp_i")
    with pytest.raises(BadInput, match="for 1 of 3 structures"):
        Saliency(scores=torch.tensor([0.1, float("inf"), 0.2])).check_finite("sosp_h")


def test_unwritable_out_is_refused_and_the_probe_leaves_nothing(tmp_path, monkeypatch):
    """Where no file can be created (a read-only folder; faked, since root writes anyway) the
    check refuses in one line and removes the folders it created to try."""
    import tempfile

    from sosp.commands.base import check_out_folder

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(BadInput, match="a/b cannot be written \\(Permission denied\\)"):
        check_out_folder(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
