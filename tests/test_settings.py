"""PruneSettings: validated on construction, and its three outward forms (the `sosp prune`
options, the command line the workflow writes, the config schema) agree with it."""

import dataclasses

import jsonschema
import pytest

from sosp import cli, curvature, models, selection, structures
from sosp.errors import BadInput
from sosp.settings import PruneSettings, check_number, check_ratios, check_type, ratio_schema

# Per field: values it accepts and values it refuses.
GOOD = {
    "n_samples": [1, 1000],
    "budget": list(selection.BUDGETS),
    "scope": list(selection.SCOPES),
    "max_layer_fraction": [None, 0.5, 1, 1.0],
    "kernel_scaling": [True, False],
    "recalibrate_bn": [True, False, None],
    "exclude": [(), ("resnet_downsample",), ("conv1", "fc*")],
    "coupling": list(structures.COUPLINGS),
    "round_to": [None, 1, 8],
    "latency_table": [None, "runs/latency/table.json"],
    "latency_corrections": [0, 2],
    "shuffle_within_layers": [True, False],
    "loss": list(curvature.LOSSES),
    "seed": [0, 7],
}
BAD = {
    "n_samples": [0, -3, 2.5, True, None, "100"],
    "budget": ["flops", None, 1],
    "scope": ["layer", None],
    "max_layer_fraction": [0, -0.1, 1.5, "0.9", True],
    "kernel_scaling": [1, "yes", None],
    "recalibrate_bn": [0, "auto"],
    "exclude": [5, ("conv1", 2)],
    "coupling": ["block", None],
    "round_to": [0, -8, 2.5, True, "8"],
    "latency_table": [5, True, ["t.json"]],
    "latency_corrections": [-1, 1.5, True, None, "2"],
    "shuffle_within_layers": [1, "true", None],
    "loss": ["mse", None],
    "seed": [1.5, None, "0", -1],
}
PRUNE = ["prune", "--model", "resnet20", "--ratio", "0.5", "--out", "o"]


def test_the_cases_cover_every_field():
    assert set(GOOD) == set(BAD) == set(PruneSettings.names())


@pytest.mark.parametrize("name,value", [(n, v) for n, vs in BAD.items() for v in vs])
def test_invalid_values_name_the_field_and_what_it_allows(name, value):
    with pytest.raises(BadInput, match=rf"^{name} must (be|lie)") as e:
        PruneSettings(**{name: value})
    assert repr(value) in str(e.value) or str(value) in str(e.value)


def test_messages_say_what_is_allowed():
    with pytest.raises(BadInput, match="budget must be one of structures, params, macs"):
        PruneSettings(budget="flops")
    with pytest.raises(BadInput, match=r"max_layer_fraction must lie in \(0, 1\], not 1.5"):
        PruneSettings(max_layer_fraction=1.5)
    with pytest.raises(BadInput, match="n_samples must be at least 1, not 0"):
        PruneSettings(n_samples=0)
    with pytest.raises(BadInput, match=r"ratio must lie in \(0, 1\), not 1.2"):
        check_ratios([0.5, 1.2])


def test_allowed_names_are_the_library_constants():
    """The choices are the tuples `selection` and `curvature` check against, not copies."""
    meta = {f.name: f.metadata for f in dataclasses.fields(PruneSettings)}
    assert meta["budget"]["choices"] is selection.BUDGETS
    assert meta["scope"]["choices"] is selection.SCOPES
    assert meta["loss"]["choices"] is curvature.LOSSES


def test_exclude_is_stored_as_a_tuple_and_settings_are_frozen():
    assert PruneSettings(exclude=None).exclude == ()
    assert PruneSettings(exclude="resnet_downsample").exclude == ("resnet_downsample",)
    assert PruneSettings(exclude=["a", "b"]) == PruneSettings(exclude=("a", "b"))
    assert PruneSettings(exclude=["a"]).exclude_list == ["a"]
    assert PruneSettings().exclude_list is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        PruneSettings().budget = "params"  # type: ignore[misc]


def test_patterns_that_match_no_conv_or_linear_layer_are_named():
    """`unmatched_exclusions` names the patterns no conv or linear layer's name matches (a
    stage name alone, "layer1", matches only the container), never a preset, which names
    layers some models lack (VGGs have no downsampling)."""
    vgg = models.create("vgg11_quarter", 10, in_channels=1, image_size=8)
    settings = PruneSettings(exclude=("layer1", "features.0", "nothing*", "resnet_downsample"))
    assert settings.unmatched_exclusions(vgg) == ["layer1", "nothing*"]
    resnet = models.create("resnet20", 10, in_channels=1, image_size=8)
    assert PruneSettings(exclude=("layer1.*", "fc")).unmatched_exclusions(resnet) == []


def test_options_are_named_as_typed_on_the_command_line():
    """A refused value given as a `sosp prune` option names the option (--seed), not the
    field (seed), so the message says what to change; a default is not blamed on an option."""
    for argv, says in [
        (["--seed", "-1"], "--seed must be at least 0, not -1"),
        (["--n-samples", "0"], "--n-samples must be at least 1, not 0"),
        (["--max-layer-fraction", "nan"], r"--max-layer-fraction must lie in \(0, 1\], not nan"),
    ]:
        args = cli.parser().parse_args([*PRUNE, *argv])
        with pytest.raises(BadInput, match=f"^{says}$"):
            PruneSettings.from_args(args)
    args = cli.parser().parse_args(PRUNE)
    with pytest.raises(BadInput, match="^n_samples must"):
        PruneSettings.from_args(args, n_samples=0)


def test_numbers_must_be_finite_and_types_are_checked_by_hint():
    """`check_number` refuses an infinite value even where only a lower bound is given;
    `check_type` checks the hints method options carry and lets other hints pass."""
    with pytest.raises(BadInput, match="x must be at least 0, not inf"):
        check_number("x", float("inf"), {"minimum": 0})
    with pytest.raises(BadInput, match="hessian must be true or false, not 'maybe'"):
        check_type("hessian", "maybe", bool)
    with pytest.raises(BadInput, match="k must be an integer or none, not 2.5"):
        check_type("k", 2.5, int | None)
    check_type("t", 200, float)  # an int is a number
    check_type("anything", object(), list[int])  # not a hint options use: unchecked


def test_split_separates_settings_from_method_options():
    settings, rest = PruneSettings.split({"budget": "macs", "seed": 3, "label_samples": 2})
    assert settings == PruneSettings(budget="macs", seed=3)
    assert rest == {"label_samples": 2}


def test_cli_options_parse_back_to_the_settings():
    """Each field is a `sosp prune` option; the parsed options give the settings typed."""
    argv = [
        *PRUNE,
        "--n-samples", "64", "--budget", "params", "--scope", "local",
        "--max-layer-fraction", "0.95", "--kernel-scaling", "--no-recalibrate-bn",
        "--exclude", "resnet_downsample", "conv1", "--loss", "squared", "--seed", "2",
    ]  # fmt: skip
    args = cli.parser().parse_args(argv)
    assert PruneSettings.from_args(args) == PruneSettings(
        n_samples=64,
        budget="params",
        scope="local",
        max_layer_fraction=0.95,
        kernel_scaling=True,
        recalibrate_bn=False,
        exclude=("resnet_downsample", "conv1"),
        loss="squared",
        seed=2,
    )


def test_options_not_given_take_the_commands_defaults():
    """Without --recalibrate-bn, `sosp prune` decides (on without --checkpoint); every other
    option not given is the field's default."""
    args = cli.parser().parse_args(PRUNE)
    assert PruneSettings.from_args(args) == PruneSettings()
    assert PruneSettings.from_args(args, recalibrate_bn=True).recalibrate_bn is True


SETTINGS = [
    PruneSettings(),
    PruneSettings(recalibrate_bn=True, exclude="resnet_downsample", max_layer_fraction=0.95),
    PruneSettings(n_samples=7, budget="macs", scope="local", kernel_scaling=True, seed=5),
    PruneSettings(loss="squared", exclude=("a.*", "b"), max_layer_fraction=1),
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("checkpoint", [[], ["--checkpoint", "dense.pt"]])
def test_command_line_parses_back_to_equal_settings(settings, checkpoint):
    """`command_line()` read by the real `sosp prune` parser gives the same settings, with or
    without --checkpoint (recalibrate_bn unset stays unset: decided by the statistics)."""
    args = cli.parser().parse_args([*PRUNE, *checkpoint, *settings.command_line()])
    assert PruneSettings.from_args(args) == settings


@pytest.mark.parametrize("name", PruneSettings.names())
def test_schema_accepts_exactly_what_the_settings_accept(name):
    """For every field, the generated JSON schema and the constructor agree on each case."""
    schema = PruneSettings.json_schema([name])
    for value, ok in [(v, True) for v in GOOD[name]] + [(v, False) for v in BAD[name]]:
        value = list(value) if isinstance(value, tuple) else value  # JSON has lists
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors({name: value}))
        assert (not errors) == ok, (name, value, errors)


def test_schema_defaults_are_the_field_defaults():
    with_defaults = PruneSettings.json_schema()["properties"]
    assert {k: v["default"] for k, v in with_defaults.items()} == {
        f.name: list(f.default) if isinstance(f.default, tuple) else f.default
        for f in dataclasses.fields(PruneSettings)
    }
    without = PruneSettings.json_schema(["budget"], defaults=False)
    assert "default" not in without["properties"]["budget"]
    assert without["additionalProperties"] is False


def test_ratio_schema_agrees_with_check_ratios():
    validator = jsonschema.Draft202012Validator(ratio_schema())
    for ratio in [1e-9, 0.5, 0.999, 0, 1, -0.2, 1.2]:
        try:
            check_ratios([ratio])
            ok = True
        except BadInput:
            ok = False
        assert validator.is_valid(ratio) == ok, ratio
