"""`sosp import`: published weights become a model file only when their sha256 is the one
recorded for them; every refusal names the fix and writes nothing."""

import hashlib
import re

import pytest
import torch

from sosp import models, paths
from sosp.commands.import_weights import expected_sha256, published
from tests.test_cli import run_sosp_here as run_sosp


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A resnet18 state dict for 10 classes as torchvision stores weights, and its sha256."""
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.manual_seed(3)
    torch.save(models.create("resnet18", 10, 3, 224).state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchvision_resnets_know_their_published_hash():
    """The zoo's ResNets carry torchvision's IMAGENET1K_V1 record: the sha256 prefix in the
    file name torch.hub checks, and the address."""
    assert expected_sha256("resnet50", None) == "0676ba61"
    assert published("resnet50").url.endswith("/resnet50-0676ba61.pth")
    assert models.spec("resnet18").weights().top1 == pytest.approx(69.758)


def test_matching_file_becomes_a_model_file_with_the_same_weights(tmp_path, weights):
    """With the file's sha256 (or its first 8 digits) it is written as OUT/model.pt, which
    loads as the same network and records the file and hash it came from."""
    path, sha = weights
    out = tmp_path / "imported"
    r = run_sosp(
        "import", "--model", "resnet18", "--dataset", "imagenette", "--weights", str(path),
        "--sha256", sha[:8], "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(paths.model(out), weights_only=True)
    assert ckpt["weights"]["sha256"] == sha and ckpt["dataset"] == "imagenette"
    net = paths.load_model(paths.model(out))
    state = torch.load(path, weights_only=True)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet18"], "not the published f37072fd.*download.pytorch.org/models"),
        (["--model", "timm/resnet10t"], "has no published weights.*pass --sha256"),
        (["--model", "resnet18", "--sha256", "deadbeef"], "not the published deadbeef"),
    ],
)
def test_other_file_is_refused_naming_the_fix(tmp_path, weights, args, message):
    """A file whose hash is not the recorded one, or a model without a recorded hash and no
    --sha256, exits 2 with one line saying what to do; nothing is written."""
    path, _ = weights
    out = tmp_path / "imported"
    r = run_sosp("import", *args, "--weights", str(path), "--out", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(message, r.stderr), r.stderr
    assert not out.exists()


def test_missing_file_names_where_to_get_it(tmp_path):
    r = run_sosp(
        "import", "--model", "resnet50", "--weights", str(tmp_path / "nope.pth"),
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert r.returncode == 2 and "resnet50-0676ba61.pth" in r.stderr
