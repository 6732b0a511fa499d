"""Recipe files: a YAML or JSON mapping of recipe keys, and every way a file can be wrong
refused as BadInput that names the file and the fix."""

import pytest

from sosp import recipes
from sosp.errors import BadInput


@pytest.mark.parametrize(
    ("name", "text"),
    [("r.yaml", "epochs: 3\nlr: 0.01\n"), ("r.json", '{"epochs": 3, "lr": 0.01}')],
)
def test_a_recipe_file_overrides_the_preset(tmp_path, name, text):
    """Keys of a YAML or JSON file replace the preset's; `--set` overrides come after."""
    path = tmp_path / name
    path.write_text(text)
    recipe = recipes.resolve("digits", {"lr": 0.2}, path)
    assert (recipe.epochs, recipe.lr, recipe.batch_size) == (3, 0.2, 64)


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("r.yaml", "epochs: [1\n", "is not valid YAML: expected ',' or ']'"),
        (
            "r.yaml",
            "a: 1\n b: 2\n",
            "is not valid YAML: mapping values are not allowed here at line 2, column 3",
        ),  # fmt: skip
        ("r.json", "{epochs: 1}", "is not valid JSON (a .yaml or .yml file is read as YAML)"),
        ("r.yaml", "", "is empty; write recipe keys in it, e.g. epochs: 10"),
        ("r.json", "  \n", "is empty"),
        ("r.yaml", "# only a comment\n", "is empty"),
        ("r.yaml", "- 1\n- 2\n", "must hold a mapping of recipe keys, e.g. epochs: 10, not a list"),
        ("r.json", '"epochs"', "not a str"),
    ],
)
def test_malformed_or_empty_files_are_refused_in_one_line(tmp_path, name, text, says):
    """A file that does not parse, holds nothing, or holds no mapping is refused with the
    parser's reason in one line (YAML's spans several), not a parser traceback."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(BadInput) as e:
        recipes.resolve("digits", None, path)
    assert str(e.value).startswith(f"recipe file {path} ")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_missing_file_says_which_option_to_fix(tmp_path):
    with pytest.raises(BadInput, match="does not exist; pass --recipe-file an existing file"):
        recipes.resolve("digits", None, tmp_path / "none.yaml")
