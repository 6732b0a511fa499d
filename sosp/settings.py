"""The settings of one pruning computation, declared once.

`PruneSettings` holds every choice `sosp.prune` makes besides the method, its options and the
ratios: which samples, which loss, what a ratio counts, how structures are ranked. Each field
carries its help text and the values it allows; from these come the validation, the
`sosp prune` options, the command line the workflow writes, and the workflow config's schema.
A new setting is one field here (plus its use in `sosp.api`).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import functools
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from torch import nn

from sosp.curvature import LOSSES
from sosp.errors import BadInput
from sosp.selection import BUDGETS, SCOPES
from sosp.structures import COUPLINGS
from sosp.structures import PRESETS as EXCLUDE_PRESETS

# What a pruning ratio may be: a fraction, neither nothing nor everything (JSON-schema bounds).
RATIO_BOUNDS = {"exclusiveMinimum": 0, "exclusiveMaximum": 1}
BOUND_KEYS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def setting(default, help: str, **allowed):
    """A `PruneSettings` field: its default, its help text, and the values it allows: `choices`
    (a tuple of names) or JSON-schema bounds (`minimum`, `exclusiveMinimum`, `maximum`,
    `exclusiveMaximum`)."""
    return field(default=default, metadata={"help": help, **allowed})


@dataclass(frozen=True)
class PruneSettings:
    """How `sosp.prune` computes saliencies and turns them into a mask. Invalid values raise
    `BadInput` on construction; `exclude` is stored as a tuple of patterns."""

    n_samples: int = setting(
        1000, "N', the number of samples the saliencies are computed on", minimum=1
    )
    budget: str = setting(
        "structures",
        "what the ratio is a fraction of, removed: structures (channels), params, macs, or "
        "latency (the dense network's, as --latency-table predicts it on its device)",
        choices=BUDGETS,
    )
    scope: str = setting(
        "global",
        "global: one ranking over all layers; local: the same fraction of every layer",
        choices=SCOPES,
    )
    max_layer_fraction: float | None = setting(
        None,
        "prune at most this fraction of any layer's structures, e.g. 0.95; unset, every "
        "layer keeps at least one",
        exclusiveMinimum=0,
        maximum=1,
    )
    kernel_scaling: bool = setting(
        False,
        "divide each saliency by its kernel's side length, 1, 3 or 7 (the paper's SOSP*)",
    )
    recalibrate_bn: bool | None = setting(
        None,
        "re-estimate BatchNorm running statistics on the pruning samples before the "
        "saliencies (needed when pruning at initialization, where the initial statistics "
        "0 and 1 make the eval-mode network meaningless); unset: when every BatchNorm still "
        "has them",
    )
    exclude: tuple[str, ...] = setting(
        (),
        "fnmatch patterns of layers never pruned, or the preset 'resnet_downsample' (the "
        "paper's setting for ResNets)",
    )
    coupling: str = setting(
        "filter",
        "what one structure is: filter (one conv filter, the paper's) or stream (one channel "
        "of a residual stream with all the filters that write it, so streams shrink)",
        choices=COUPLINGS,
    )
    round_to: int | None = setting(
        None,
        "every pruned layer keeps a multiple of this many channels (or all of them), e.g. 8 "
        "for tensor cores, 64 for bf16 convs on an H100/H200, 16 for fp32 on an AVX-512 CPU; "
        "the budget is met with the rounded masks",
        minimum=1,
    )
    latency_table: str | None = setting(
        None,
        "a latency table (JSON, from sosp latency-table) measured on the device this runs on: "
        "needed by --budget latency; with any budget, the report gives the pruned network's "
        "predicted and measured latency",
    )
    latency_corrections: int = setting(
        3,
        "with --budget latency: how many times the pruned network may be timed against the "
        "dense one and selected again for a corrected target of the table, while its "
        "measured latency is more than 3 percent off the one asked for (a shared machine's speed "
        "shifts what narrow and wide networks cost); 0: the table alone (the mask then "
        "depends on the table only)",
        minimum=0,
    )
    shuffle_within_layers: bool = setting(
        False,
        "keep how many structures the method prunes in each layer but choose which ones at "
        "random, drawn with the seed (the paper's shuffle control, Table 8: the architecture "
        "the method finds without the channels it finds)",
    )
    loss: str = setting("cross_entropy", "the loss whose curvature is used", choices=LOSSES)
    seed: int = setting(
        0,
        "seed of the method's random draws (sampled labels, random order) and of the shuffle "
        "within layers; `sosp prune` also draws the N' samples and, without --checkpoint, the "
        "initialization with it",
        minimum=0,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", _patterns(self.exclude))
        for f in fields(self):
            _check(f.name, getattr(self, f.name), _hint(f.name), f.metadata)
        if self.budget == "latency" and self.latency_table is None:
            raise BadInput(
                "budget latency needs latency_table: the JSON file sosp latency-table measures "
                "on the device the network will run on"
            )

    @property
    def exclude_list(self) -> list[str] | None:
        """`exclude` as report.json and model files store it: a list, or None for none."""
        return list(self.exclude) or None

    def unmatched_exclusions(self, model: nn.Module) -> list[str]:
        """The `exclude` patterns that match no conv or linear layer (the layers a structure
        is cut from) of `model`, so exclude nothing; presets are not checked, since one
        names layers only some models have (VGGs have no downsampling)."""
        layers = cut_layers(model)
        return [
            p
            for p in self.exclude
            if p not in EXCLUDE_PRESETS and not any(fnmatch.fnmatchcase(n, p) for n in layers)
        ]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def split(cls, values: Mapping[str, object]) -> tuple[PruneSettings, dict]:
        """(the settings named in `values`, defaults for the others; the remaining entries of
        `values`, e.g. a method's options)."""
        mine = {k: v for k, v in values.items() if k in cls.names()}
        return cls(**mine), {k: v for k, v in values.items() if k not in mine}

    # -- the command line ---------------------------------------------------------------------

    @classmethod
    def add_arguments(
        cls, parser: argparse.ArgumentParser, default_help: Mapping[str, str] | None = None
    ) -> None:
        """Add one option per field (`--n-samples`, `--budget`, ...; booleans as
        `--x`/`--no-x`) to `parser`. Every option defaults to None, 'not given', so that
        `from_args` can tell the defaults apart; `default_help` replaces a field's
        '(default: ...)' text where the command's default differs from the field's."""
        default_help = default_help or {}
        for f in fields(cls):
            base, _, many = _kind(_hint(f.name))
            meta = f.metadata
            shown = default_help.get(f.name, _default_text(f.default))
            kwargs: dict = {"default": None, "help": f"{meta['help']} (default: {shown})"}
            if base is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif many:
                kwargs.update(nargs="*", metavar=f.name.upper())
            else:
                kwargs["type"] = base
                if "choices" in meta:
                    kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
            parser.add_argument(_flag(f.name), **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **defaults) -> PruneSettings:
        """The settings given on the command line (`add_arguments`'s options); a field not
        given takes its value from `defaults`, else the field's default."""
        given = {name: getattr(args, name) for name in cls.names()}
        given = {k: v for k, v in given.items() if v is not None}
        try:
            return cls(**{**defaults, **given})
        except BadInput as e:  # name the option the user typed, not the field
            name = str(e).split(" ", 1)[0]
            if name not in given:
                raise
            raise BadInput(_flag(name) + str(e).removeprefix(name)) from None

    def command_line(self) -> list[str]:
        """`sosp prune` options that reproduce these settings, every field written out
        (booleans as `--x`/`--no-x`) except an unset `max_layer_fraction` or an empty
        `exclude`, so the command does not depend on the command's own defaults."""
        out: list[str] = []
        for name in self.names():
            value = getattr(self, name)
            if isinstance(value, bool):
                out.append(_flag(name) if value else _flag(name).replace("--", "--no-", 1))
            elif isinstance(value, tuple):
                out += [_flag(name), *value] if value else []
            elif value is not None:
                out += [_flag(name), str(value)]
        return out

    # -- the workflow config ------------------------------------------------------------------

    @classmethod
    def json_schema(cls, names: Iterable[str] | None = None, defaults: bool = True) -> dict:
        """A JSON schema (draft 2020-12) of an object holding the fields `names` (default:
        all), with each field's help as description and its allowed values; with `defaults`,
        each property carries its default (snakemake's `validate` fills those in)."""
        by_name = {f.name: f for f in fields(cls)}
        properties = {}
        for name in names if names is not None else cls.names():
            if name not in by_name:
                raise ValueError(f"PruneSettings has no field {name!r}")
            properties[name] = _property_schema(by_name[name], defaults)
        return {"type": "object", "additionalProperties": False, "properties": properties}


def ratio_schema() -> dict:
    """The JSON schema of one pruning ratio."""
    return {"type": "number", **RATIO_BOUNDS}


def cut_layers(model: nn.Module) -> list[str]:
    """The names of `model`'s conv and linear layers, the layers structures are cut from (what
    an `exclude` pattern is matched against)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def check_ratios(ratios: Sequence[float]) -> None:
    """Raise `BadInput` unless every ratio lies in (0, 1)."""
    for ratio in ratios:
        check_number("ratio", ratio, RATIO_BOUNDS)


# --------------------------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(default: object) -> str:
    if default is None or default == ():
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def _hint(name: str) -> object:
    """The resolved type of field `name` (the annotations are strings under __future__)."""
    return _hints()[name]


@functools.cache
def _hints() -> dict[str, object]:
    return typing.get_type_hints(PruneSettings)


def _kind(hint: object) -> tuple[type, bool, bool]:
    """(base type, whether None is allowed, whether it is a tuple of base) of a field type:
    int, bool, str, float | None, tuple[str, ...]."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return args[0], False, True
    if type(None) in args:
        (base,) = [a for a in args if a is not type(None)]
        return base, True, False
    return hint, False, False  # type: ignore[return-value]


def _patterns(exclude: object) -> object:
    """`exclude` as a tuple: None -> (), 'p' -> ('p',), a list -> a tuple (else unchanged, for
    `_check` to name)."""
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        return (exclude,)
    if isinstance(exclude, Sequence):
        return tuple(exclude)
    return exclude


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _is(value: object, base: type) -> bool:
    if base is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # True is an int to Python, not a count or a fraction
    return isinstance(value, (int, float) if base is float else base)


def check_type(name: str, value: object, hint: object) -> None:
    """Raise `BadInput` naming `name` unless `value` has type `hint` (int, float, bool, str,
    X | None, tuple[str, ...]); other hints are not checked."""
    try:
        base = _kind(hint)[0]
    except ValueError:  # a union of several types
        return
    if base in _TYPE_NAMES:
        _check(name, value, hint, {})


def _check(name: str, value: object, hint: object, meta: Mapping) -> None:
    """Raise `BadInput` naming `name` unless `value` has the field's type and allowed value."""
    base, nullable, many = _kind(hint)
    if value is None and nullable:
        return
    if many:
        if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
            raise BadInput(f"{name} must be a pattern or a list of patterns, not {value!r}")
        return
    if not _is(value, base):
        none = " or none" if nullable else ""
        raise BadInput(f"{name} must be {_TYPE_NAMES[base]}{none}, not {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise BadInput(f"{name} must be one of {', '.join(meta['choices'])}, not {value!r}")
    check_number(name, value, meta)


def check_number(name: str, value, meta: Mapping) -> None:
    """Raise `BadInput` naming `name` unless `value` is a finite number within the JSON-schema
    bounds in `meta` (`minimum`, `exclusiveMaximum`, ...; no bounds: nothing is checked)."""
    bounds = {k: meta[k] for k in BOUND_KEYS if k in meta}
    if not bounds:
        return
    if not _is(value, float):
        raise BadInput(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise BadInput(f"{name} must {_range_text(bounds)}, not {value}")
    inside = all(
        {
            "minimum": value >= bound,
            "exclusiveMinimum": value > bound,
            "maximum": value <= bound,
            "exclusiveMaximum": value < bound,
        }[key]
        for key, bound in bounds.items()
    )
    if not inside:
        raise BadInput(f"{name} must {_range_text(bounds)}, not {value}")


def _range_text(bounds: Mapping[str, float]) -> str:
    """'lie in (0, 1]', 'be at least 1', ...: the bounds as a reader writes them."""
    low = ("[", bounds["minimum"]) if "minimum" in bounds else None
    low = ("(", bounds["exclusiveMinimum"]) if "exclusiveMinimum" in bounds else low
    high = ("]", bounds["maximum"]) if "maximum" in bounds else None
    high = (")", bounds["exclusiveMaximum"]) if "exclusiveMaximum" in bounds else high
    if low and high:
        return f"lie in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"be {'at least' if low[0] == '[' else 'greater than'} {low[1]}"
    assert high is not None
    return f"be {'at most' if high[0] == ']' else 'less than'} {high[1]}"


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def _property_schema(f: dataclasses.Field, defaults: bool) -> dict:
    base, nullable, many = _kind(_hint(f.name))
    meta = f.metadata
    if many:
        schema: dict = {"type": "array", "items": {"type": _JSON_TYPES[base]}}
    elif "choices" in meta:
        schema = {"enum": list(meta["choices"])}
    else:
        schema = {"type": [_JSON_TYPES[base], "null"] if nullable else _JSON_TYPES[base]}
    schema.update({k: meta[k] for k in BOUND_KEYS if k in meta})
    schema["description"] = meta["help"]
    if defaults:
        schema["default"] = list(f.default) if many else f.default
    return schema
