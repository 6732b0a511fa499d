"""sosp.paths: every run file is named there and nowhere else; the folder rules for several
ratios and several pruned networks; model and mask files round-trip with clear errors."""

import ast
import re
from pathlib import Path

import pytest
import torch

import sosp
from sosp import counting, models, paths
from sosp.errors import BadInput

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = [
    paths.LAST_CHECKPOINT,
    paths.MODEL,
    paths.METRICS,
    paths.MASK,
    paths.PRUNED,
    paths.SPARSITY,
    paths.REPORT,
    paths.REPORTS,
    paths.RUNS,
]


def _spells(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}\b", text) is not None


def _code_strings(path: Path) -> list[str]:
    """The string literals of a Python file, docstrings left out (they may describe files)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    ]


def _smk_code(path: Path) -> str:
    """A Snakemake file without its comments and triple-quoted docstrings."""
    text = re.sub(r'"""(.|\n)*?"""', "", path.read_text())
    return "\n".join(line.split("#")[0] for line in text.splitlines())


def test_run_file_names_are_spelled_once_in_paths():
    assert len(set(RUN_FILES)) == len(RUN_FILES)
    literals = _code_strings(REPO / "sosp" / "paths.py")
    for name in RUN_FILES:
        assert sum(_spells(s, name) for s in literals) == 1, name


def test_no_other_module_or_rule_spells_a_run_file_name():
    """The package and the workflow ask sosp.paths for each file name (docstrings and
    comments aside)."""
    found = []
    for path in sorted((REPO / "sosp").rglob("*.py")):
        if path.name != "paths.py":
            found += [(path, n) for s in _code_strings(path) for n in RUN_FILES if _spells(s, n)]
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        found += [(path, n) for n in RUN_FILES if _spells(_smk_code(path), n)]
    assert not found


def test_run_files_lie_in_their_folder():
    assert paths.model("runs/dense/k") == Path("runs/dense/k/model.pt")
    assert paths.last_checkpoint("o").parent == paths.metrics("o").parent == Path("o")
    assert [paths.mask("o").name, paths.pruned("o").name, paths.report("o").name] == [
        "mask.json",
        "pruned.pt",
        "report.json",
    ]


def test_one_ratio_writes_into_out_several_into_a_folder_each():
    assert paths.ratio_folder("out", [0.5], 0.5) == Path("out")
    assert paths.ratio_folder("out", [0.3, 0.5], 0.3) == Path("out/0.3")
    assert paths.ratio_folder("out", [0.25, 0.5], 0.5) == Path("out/0.5")


def test_finetune_folders_follow_the_pruned_files_folders():
    assert paths.finetune_folders("ft", ["p/pruned.pt"]) == [Path("ft")]
    two = paths.finetune_folders("ft", ["p/0.3/pruned.pt", "p/0.6/pruned.pt"])
    assert two == [Path("ft/0.3"), Path("ft/0.6")]
    with pytest.raises(BadInput, match="differently named folders"):
        paths.finetune_folders("ft", ["a/x/pruned.pt", "b/x/pruned.pt"])


def test_pruned_model_file_rebuilds_the_pruned_network(tmp_path):
    """A pruned network saved with its architecture loads back with the same counts and
    outputs; so does a dense one (no mask)."""
    dense = models.create("resnet20", 10, 1, 8)
    data = [(torch.randn(16, 1, 8, 8), torch.randint(10, (16,)))]
    r = sosp.prune(dense, "magnitude", 0.4, data, exclude="resnet_downsample", n_samples=16)
    arch = {"model": "resnet20", "dataset": "digits", "exclude": ["resnet_downsample"]}
    paths.save_model(tmp_path / "pruned.pt", r.model, {**arch, "mask": r.mask})
    paths.save_model(tmp_path / "model.pt", dense, {"model": "resnet20", "dataset": "digits"})
    x = torch.randn(4, 1, 8, 8)
    for path, net in [(tmp_path / "pruned.pt", r.model), (tmp_path / "model.pt", dense)]:
        loaded = sosp.load_model(path)
        assert counting.count(loaded, (1, 8, 8)) == counting.count(net, (1, 8, 8))
        torch.testing.assert_close(loaded.eval()(x), net.eval()(x))


def test_model_file_errors_name_the_file(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "bare.pt")
    with pytest.raises(BadInput, match="not a model file written by sosp"):
        paths.load_model(tmp_path / "bare.pt")
    with pytest.raises(BadInput, match="does not exist"):
        paths.load_model(tmp_path / "missing.pt")


def test_load_weights_takes_a_state_dict_or_a_model_file(tmp_path):
    source, target = models.create("resnet20", 10, 1, 8), models.create("resnet20", 10, 1, 8)
    paths.save_model(tmp_path / "m.pt", source, {"model": "resnet20", "dataset": "digits"})
    torch.save(source.state_dict(), tmp_path / "state.pt")
    for name in ("m.pt", "state.pt"):
        paths.load_weights(target, tmp_path / name)
        assert all(torch.equal(source.state_dict()[k], v) for k, v in target.state_dict().items())
    with pytest.raises(BadInput, match="does not fit the model"):
        paths.load_weights(models.create("resnet32", 10, 1, 8), tmp_path / "m.pt")


def test_mask_file_round_trips_and_refuses_other_json(tmp_path):
    mask = {"layer1.0.conv1": [0, 3], "conv1": [1]}
    sosp.save_mask(mask, tmp_path / "mask.json", model="resnet20", exclude=None)
    assert sosp.load_mask(tmp_path / "mask.json") == mask
    assert paths.read_mask_file(tmp_path / "mask.json")["model"] == "resnet20"
    (tmp_path / "other.json").write_text('{"masks": {}}')
    with pytest.raises(BadInput, match="not a mask file"):
        sosp.load_mask(tmp_path / "other.json")
    with pytest.raises(BadInput, match="does not exist"):
        sosp.load_mask(tmp_path / "missing.json")
