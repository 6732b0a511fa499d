"""`sosp export`: a pruned ResNet whose residual sums hold `ChannelScatter`s and `Subsample`s,
written as ONNX, TorchScript and pt2; each file reproduces the network at batch sizes other
than the traced one, and loads and runs in an interpreter where sosp cannot be imported."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import sosp
from sosp import cli, data, exporting, models, paths
from sosp.errors import BadInput, MissingExtra
from sosp.shortcuts import ChannelScatter, Subsample

FORMATS = ("onnx", "torchscript", "pt2")
TRACED_BATCH = 4


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """pruned.pt of a ResNet-20 with zero-padding shortcuts for CIFAR-10's input shape, half
    of its structures removed: surgery has put ChannelScatters before residual sums and
    Subsamples in place of the padding shortcuts. BatchNorm statistics are made non-trivial
    so that eval mode matters."""
    torch.manual_seed(0)
    meta = data.info("cifar10")
    net = models.create("resnet20_zeropad", meta.num_classes, meta.in_channels, meta.image_size)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
    x, y = torch.randn(8, *meta.input_shape), torch.randint(0, meta.num_classes, (8,))
    r = sosp.prune(net, method="magnitude", ratio=0.5, data=[(x, y)], n_samples=8)
    kinds = {type(m) for m in r.model.modules()}
    assert {ChannelScatter, Subsample} <= kinds
    path = tmp_path_factory.mktemp("prune") / paths.PRUNED
    arch = {"model": "resnet20_zeropad", "dataset": "cifar10", "exclude": None}
    paths.save_model(path, r.model, {**arch, "mask": r.mask})
    return path


@pytest.fixture(scope="module")
def exported(pruned):
    """{format: file} written by `sosp export --to <format>` beside pruned.pt, each traced on a
    batch of TRACED_BATCH."""
    for fmt in FORMATS:
        argv = ["export", "--pruned", str(pruned), "--to", fmt, "--batch-size", f"{TRACED_BATCH}"]
        assert cli.main(argv) == 0
    files = {fmt: exporting.default_path(pruned, fmt) for fmt in FORMATS}
    assert [f.name for f in files.values()] == [
        "pruned.onnx",
        "pruned.torchscript.pt",
        "pruned.pt2",
    ]
    return files


def test_the_files_reproduce_the_network_where_sosp_cannot_be_imported(exported, pruned, tmp_path):
    """Each file, loaded as a user without sosp loads it, gives the eval-mode pruned
    network's outputs to 1e-5 on random batches of 5 and 1 (it was traced on 4). It runs in a
    fresh interpreter in isolated mode (no PYTHONPATH, no current folder on sys.path) started
    in an empty folder, with `sys.modules["sosp"] = None`, so that any import of sosp or of a
    module inside it (which the editable install would otherwise find) raises ImportError."""
    net = sosp.load_model(pruned).eval()
    for n in (5, 1):
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            np.save(tmp_path / f"want{n}.npy", net(x).numpy())
        np.save(tmp_path / f"x{n}.npy", x.numpy())
    script = f"""
import json, sys
sys.modules["sosp"] = sys.modules["baselines"] = None
try:
    import sosp.shortcuts
    blocked = False
except ImportError:
    blocked = True
import numpy as np, onnxruntime, torch

def runner(fmt, path):
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {{"input": x}})[0]
    module = torch.jit.load(path) if fmt == "torchscript" else torch.export.load(path).module()
    return lambda x: module(torch.from_numpy(x)).detach().numpy()

diff = {{}}
for fmt, path in {json.dumps({k: str(v) for k, v in exported.items()})}.items():
    try:
        run = runner(fmt, path)
        for n in (5, 1):
            got, want = run(np.load(f"x{{n}}.npy")), np.load(f"want{{n}}.npy")
            assert got.shape == want.shape, (got.shape, want.shape)
            diff[f"{{fmt}} at {{n}}"] = float(np.abs(got - want).max())
    except Exception as e:
        diff[fmt] = repr(e)
loaded = [m for m, v in sys.modules.items() if m.split(".")[0] == "sosp" and v is not None]
print(json.dumps({{"blocked": blocked, "loaded": loaded, "diff": diff}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["blocked"] and result["loaded"] == []
    diff = result["diff"]
    assert sorted(diff) == sorted(f"{fmt} at {n}" for fmt in FORMATS for n in (5, 1)), diff
    assert all(d <= 1e-5 for d in diff.values()), diff


def test_fold_bn_writes_a_file_without_batchnorm_that_equals_the_network(pruned, tmp_path):
    """`--fold-bn`: the pt2 file of the pruned ResNet (ChannelScatters and all) holds no
    batch-norm operation and gives the eval-mode network's outputs to 1e-5; the network in
    memory keeps its BatchNorms and its training flag (`folded_batchnorm` works on a copy)."""
    out = tmp_path / "folded.pt2"
    argv = ["export", "--pruned", str(pruned), "--to", "pt2", "--fold-bn", "--out", str(out)]
    assert cli.main(argv) == 0
    program = torch.export.load(out)
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "batch_norm" in op], ops
    assert any("conv" in op for op in ops)
    net = sosp.load_model(pruned).train()
    folded = exporting.folded_batchnorm(net)
    assert net.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        want = net.eval()(x)
        for got in (folded(x), program.module()(x)):
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_the_onnx_input_and_output_have_a_symbolic_batch_dimension(exported):
    import onnx

    graph = onnx.load(exported["onnx"]).graph
    for value in (graph.input[0], graph.output[0]):
        first = value.type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.HasField("dim_value"), value


def parsed(*argv: str):
    return cli.parser().parse_args(["export", *argv])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--pruned", "{dir}/nothing.pt", "--to", "pt2"], "does not exist"),
        (["--pruned", "{dir}/weights.pt", "--to", "pt2"], "is not a model file written by sosp"),
        (["--pruned", "{dir}/mask.json", "--to", "pt2"], r"is a mask \(JSON\), not a model file"),
        (["--pruned", "{dir}/cut.pt", "--to", "pt2"], "is not a model file .* or a truncated"),
        (["--pruned", "{pruned}", "--to", "tflite"], "unknown export format 'tflite'"),
        (["--pruned", "{pruned}", "--to", "pt2", "--batch-size", "1"], "at least 2"),
        (["--pruned", "{pruned}", "--to", "pt2", "--out", "{pruned}"], "the model file itself"),
    ],
)
def test_bad_input_is_a_bad_input_error(pruned, tmp_path, argv, message):
    """A missing file, a checkpoint that is no model file, a mask file, a truncated model file,
    an unknown format, a batch of 1 and writing over the model file raise BadInput, and
    nothing is written."""
    torch.save({"weights": torch.zeros(3)}, tmp_path / "weights.pt")
    (tmp_path / "mask.json").write_text('{"mask": {"conv1": [0]}}')
    (tmp_path / "cut.pt").write_bytes(pruned.read_bytes()[:1000])
    before = sorted(pruned.parent.iterdir()), sorted(tmp_path.iterdir())
    argv = [a.format(dir=tmp_path, pruned=pruned) for a in argv]
    args = parsed(*argv)
    with pytest.raises(BadInput, match=message):
        args.run(args)
    assert (sorted(pruned.parent.iterdir()), sorted(tmp_path.iterdir())) == before


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    assert cli.main(["export", "--pruned", str(tmp_path / "x.pt"), "--to", "tflite"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("sosp export: error: unknown export format 'tflite'; choose one of")
    (tmp_path / "mask.json").write_text('{"mask": {"conv1": [0]}}')
    assert cli.main(["export", "--pruned", str(tmp_path / "mask.json"), "--to", "pt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a mask (JSON), not a model file; pass the" in err


def test_onnx_without_its_packages_names_the_extra(pruned, monkeypatch, capsys):
    """Where onnxruntime cannot be imported, `--to onnx` stops with one line naming
    `pip install 'sosp[export]'`, before reading the model file."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtra):
        exporting.check_format("onnx")
    out = pruned.parent / "no.onnx"
    assert cli.main(["export", "--pruned", str(pruned), "--to", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "sosp export: error: --to onnx needs onnxruntime: pip install 'sosp[export]'\n"
    assert not out.exists()


def test_a_file_that_does_not_reproduce_the_network_is_not_written(pruned, monkeypatch):
    """The check before writing: a format whose file gives other outputs than the network
    raises BadInput and leaves no file (nor a temporary one) behind."""
    monkeypatch.setitem(exporting._WRITERS, "pt2", lambda net, x: b"a file")
    monkeypatch.setitem(exporting._RUNNERS, "pt2", lambda blob, x: torch.ones(len(x), 10) * 1e3)
    before = sorted(pruned.parent.iterdir())
    out = pruned.parent / "wrong.pt2"
    args = parsed("--pruned", str(pruned), "--to", "pt2", "--out", str(out))
    with pytest.raises(BadInput, match="differs from the network by up to .* on a batch of 3"):
        args.run(args)
    assert sorted(pruned.parent.iterdir()) == before
