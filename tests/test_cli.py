"""The `sosp` command as a user types it."""

import json
import subprocess
import sys


def sosp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sosp", *args], capture_output=True, text=True)


def test_count_json():
    """`sosp count --json` prints exactly the params and MACs of the architecture."""
    r = sosp("count", "--model", "resnet56", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"params": 855_770, "macs": 125_747_840}


def test_unknown_model_is_a_message_not_a_traceback():
    """Bad input exits 2 with one line naming the problem."""
    r = sosp("count", "--model", "resnet57", "--json")
    assert r.returncode == 2
    assert "unknown model 'resnet57'" in r.stderr and "Traceback" not in r.stderr


def test_models_table_lists_the_zoo():
    r = sosp("models", "--dataset", "digits", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"resnet56", "vgg19", "densenet40", "resnet32x4"} <= {row["model"] for row in rows}
