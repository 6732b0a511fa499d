"""`sosp count`: exact parameter and MAC counts of an architecture."""

import json

from tests.test_cli import run_sosp


def test_count_json():
    """`sosp count --json` prints exactly the params and MACs of the architecture."""
    r = run_sosp("count", "--model", "resnet56", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"params": 855_770, "macs": 125_747_840}
