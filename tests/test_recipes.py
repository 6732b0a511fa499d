"""Recipe files: a YAML or JSON mapping of recipe keys, and every way a file can be wrong
refused as BadInput that names the file and the fix."""

import re

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


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"momentum": -1}, "recipe key 'momentum' must be at least 0, not -1.0"),
        ({"weight_decay": -1e-4}, "recipe key 'weight_decay' must be at least 0"),
        ({"gamma": "nan"}, "recipe key 'gamma' must be greater than 0, not nan"),
        ({"lr": "inf"}, "recipe key 'lr' must be greater than 0, not inf"),
        ({"bn_l1": -1}, "recipe key 'bn_l1' must be at least 0"),
        ({"epochs": 0}, "recipe key 'epochs' must be at least 1, not 0"),
        ({"epochs": 1.5}, "recipe key 'epochs': cannot read 1.5 as int"),
        ({"lr": True}, "recipe key 'lr': cannot read True as float"),
        ({"nesterov": True, "momentum": 0}, "recipe key 'nesterov' needs a momentum"),
    ],
)
def test_keys_outside_their_range_are_refused_before_training(overrides, says):
    """Values SGD refuses with a traceback (negative momentum or weight decay), values that
    train silently wrong (a NaN gamma, a negative L1 strength, 1.5 epochs read as 1, True read
    as lr 1.0) are refused by `resolve`, naming the key."""
    with pytest.raises(BadInput, match=f"^{re.escape(says)}"):
        recipes.resolve("digits", overrides)


def test_integral_numbers_are_read_as_counts():
    """2.0 and "3" are whole numbers of epochs; "0.5" a learning rate."""
    assert recipes.resolve("digits", {"epochs": 2.0}).epochs == 2
    assert recipes.resolve("digits", {"epochs": "3", "lr": "0.5"}).lr == 0.5
