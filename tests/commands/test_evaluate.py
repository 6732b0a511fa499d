"""`sosp evaluate`: one result line per model file, printed as each is evaluated."""

import json

import torch

from sosp import cli, models, paths


def test_one_result_line_per_model_file_in_order(tmp_path, capsys):
    """Without bars (--no-progress), evaluating two model files prints one line each, in the
    order given, with the accuracy and counts --out records for it."""
    files = []
    for name in ("a", "b"):
        torch.manual_seed(len(files))
        net = models.create("resnet20", 10, 1, 8)
        files.append(tmp_path / name / paths.MODEL)
        paths.save_model(files[-1], net, {"model": "resnet20", "dataset": "digits"})
    out = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", *map(str, files), "--no-progress", "--out", str(out)]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    records = json.loads(out.read_text())
    assert len(lines) == 2 and [r["checkpoint"] for r in records] == list(map(str, files))
    for line, r in zip(lines, records, strict=True):
        assert line == (
            f"{r['checkpoint']}: test acc {r['test_acc']:.4f}, "
            f"{r['params']:,} params, {r['macs']:,} MACs"
        )
