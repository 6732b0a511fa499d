"""`sosp count`: exact parameter and MAC counts of an architecture."""

import json

from tests.test_cli import run_sosp, run_sosp_here


def test_count_json():
    """`sosp count --json` prints exactly the params and MACs of the architecture."""
    r = run_sosp("count", "--model", "resnet56", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"params": 855_770, "macs": 125_747_840}


def test_count_ccp_convention(tmp_path):
    """Pruning 2 of the 16 filters of layer1.0.conv2 (it writes the residual stream) of
    resnet20 on 8x8 digits: the actual count drops their 9*16*2*64 MACs; the ccp convention
    also drops the 2 input channels of the next conv on the main path, layer1.1.conv1
    (9*2*16*64 more). Without a mask both conventions give the dense count."""
    mask = tmp_path / "mask.json"
    mask.write_text(json.dumps({"mask": {"layer1.0.conv2": [0, 1]}, "model": "resnet20"}))

    def macs(*more: str) -> int:
        args = ("count", "--model", "resnet20", "--dataset", "digits", "--json", *more)
        r = run_sosp_here(*args)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["macs"]

    dense = macs()
    assert macs("--convention", "ccp") == dense
    actual = macs("--mask", str(mask))
    assert actual == dense - 9 * 16 * 2 * 64
    assert macs("--mask", str(mask), "--convention", "ccp") == actual - 9 * 2 * 16 * 64
