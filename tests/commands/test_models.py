"""`sosp models`: the zoo table."""

import json

from tests.test_cli import run_sosp


def test_models_table_lists_the_zoo():
    r = run_sosp("models", "--dataset", "digits", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"resnet56", "vgg19", "densenet40", "resnet32x4"} <= {row["model"] for row in rows}
