"""`sosp prune` as a user types it: the files it writes, its errors, several ratios, and
BatchNorm recalibration when pruning at initialization."""

import json

from tests.test_cli import run_sosp, run_sosp_here


def test_prune_writes_mask_model_and_report(tmp_path):
    """`sosp prune` writes mask.json, pruned.pt and report.json; the mask counts back to the
    report and the saved network reloads with those counts."""
    import sosp
    from sosp import counting

    out = tmp_path / "run"
    r = run_sosp(
        "prune",
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--method",
        "sosp_i",
        "--ratio",
        "0.4",
        "--n-samples",
        "64",
        "--exclude",
        "resnet_downsample",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    counted = run_sosp(
        "count",
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--mask",
        str(out / "mask.json"),
        "--json",
    )
    assert json.loads(counted.stdout) == report["after"]
    small = sosp.load_model(out / "pruned.pt")
    assert counting.count(small, (1, 8, 8)).as_dict() == report["after"]


def test_prune_bad_ratio_leaves_no_output(tmp_path):
    r = run_sosp(
        "prune",
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--ratio",
        "1.2",
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 2 and "ratio must lie in (0, 1)" in r.stderr
    assert not (tmp_path / "run").exists()


def test_truncated_checkpoint_is_reported(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    r = run_sosp(
        "prune",
        "--model",
        "resnet20",
        "--dataset",
        "digits",
        "--ratio",
        "0.5",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "run"),
    )
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr


def test_prune_several_ratios_share_one_saliency(tmp_path):
    """`--ratio 0.3 0.6` writes one folder per ratio and reports.json listing both; the larger
    ratio prunes more and its order extends the smaller one's mask."""
    out = tmp_path / "run"
    r = run_sosp(
        "prune", "--model", "resnet20", "--dataset", "digits", "--method", "sosp_h",
        "--ratio", "0.3", "0.6", "--n-samples", "32", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    reports = json.loads((out / "reports.json").read_text())
    assert [rep["ratio"] for rep in reports] == [0.3, 0.6]
    small, large = (json.loads((out / f / "mask.json").read_text())["mask"] for f in ("0.3", "0.6"))
    assert all(set(small.get(k, [])) <= set(large.get(k, [])) for k in small)
    assert reports[0]["pruned_structures"] < reports[1]["pruned_structures"]


def test_pruning_at_initialization_recalibrates_batchnorm(tmp_path):
    """Without --checkpoint `sosp prune` re-estimates BN statistics, says so, and records it:
    the untrained ResNet-56's eval-mode logit std drops below 10."""

    import sosp
    from sosp import batchnorm, data

    out = tmp_path / "init"
    args = ["--model", "resnet56", "--dataset", "digits", "--ratio", "0.5", "--n-samples", "64"]
    args += ["--method", "magnitude"]  # recalibration comes before any method's saliency
    r = run_sosp("prune", *args, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (
        "recalibrated the statistics of 57 BatchNorms (they had their initial statistics) on "
        "64 pruning samples" in r.stdout
    )
    info = json.loads((out / "report.json").read_text())["bn_recalibration"]
    assert info["logit_std_before"] > 20 and info["logit_std_after"] < 10  # 47 on 8x8 digits
    x = data.load("digits", "train").tensors[0][:64]
    assert batchnorm.logit_std(sosp.load_model(out / "pruned.pt"), [(x, None)]) < 10
    off = run_sosp("prune", *args, "--no-recalibrate-bn", "--out", str(tmp_path / "off"))
    assert off.returncode == 0 and "recalibrated" not in off.stdout


def test_shuffle_within_layers_flag_shuffles_and_says_so(tmp_path):
    """`sosp prune --shuffle-within-layers` records the shuffle in report.json, with the
    method's own mask's counts, which the shuffled network keeps."""
    out = tmp_path / "shuffled"
    r = run_sosp_here(
        "prune", "--model", "resnet20", "--dataset", "digits", "--method", "magnitude",
        "--ratio", "0.4", "--n-samples", "16", "--shuffle-within-layers", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["shuffle_within_layers"] is True
    assert report["unshuffled"] == {k: report[k] for k in ("params_removed", "macs_removed")}
