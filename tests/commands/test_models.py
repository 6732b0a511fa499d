"""`sosp models`: the zoo table, and which timm/torchvision CNN families prune."""

import json

from tests.test_cli import run_sosp_here


def test_models_table_lists_the_zoo():
    """`sosp models --json` lists every zoo model with its counts."""
    r = run_sosp_here("models", "--dataset", "digits", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"resnet56", "vgg19", "densenet40", "resnet32x4"} <= {row["model"] for row in rows}


def test_timm_families_say_prunes_or_where_they_stop():
    """`sosp models --timm` prints one line per family (its kind, model and "prunes", or the
    operation that stops it, on one line), CNNs and vision transformers, and then how many
    prune; --json one object each."""
    r = run_sosp_here(
        "models", "--timm", "--family", "resnet", "--family", "resnest", "--family", "vit"
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "2 of 3 families prune"
    head = ["timm", "cnn", "resnet", "resnet10t"]
    resnet = next(line for line in lines if line.split()[:4] == head)
    resnest = next(line for line in lines if line.split()[:3] == ["timm", "cnn", "resnest"])
    vit = next(line for line in lines if line.split()[:3] == ["timm", "transformer", "vit"])
    assert "prunes" in vit
    assert "prunes" in resnet
    assert "node" in resnest and "prunes" not in resnest and "0x" not in resnest

    r = run_sosp_here("models", "--timm", "--family", "resnet", "--family", "resnest", "--json")
    rows = {row["family"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert rows["resnet"]["prunes"] and rows["resnet"]["structures"] > 0
    assert not rows["resnest"]["prunes"] and "'sum_1'" in rows["resnest"]["stops_at"]


def test_family_options_are_checked():
    """--family needs --timm/--torchvision and a known name; --dataset does not apply there."""
    r = run_sosp_here("models", "--family", "resnet")
    assert r.returncode == 2 and "--timm" in r.stderr
    r = run_sosp_here("models", "--torchvision", "--family", "resnet10t")
    assert r.returncode == 2 and "no such family" in r.stderr and "shufflenet_v2" in r.stderr
    r = run_sosp_here("models", "--timm", "--dataset", "digits")
    assert r.returncode == 2 and "--dataset" in r.stderr
