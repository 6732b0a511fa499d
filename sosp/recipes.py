"""Training recipes: the paper's schedules as named presets, overridable key by key.

    cifar           SGD m=0.9, lr 0.1, wd 1e-4, batch 128, 200 epochs, lr/10 at 120 and 160
    densenet        as cifar, 300 epochs, lr/10 at 150 and 225 (DenseNet-40)
    imagenet        batch 256, 128 epochs, cosine
    c_obd_finetune  EigenDamage/C-OBD fine-tuning: lr 1e-3, 150 epochs, lr/10 at 75 and 112
    digits          the embedded demo: batch 64, 30 epochs, cosine (seconds on a laptop)

Fine-tuning repeats the training schedule unless told otherwise. A retraining schedule after
weight pruning (`schedule` ft, lrw, slr or clr, `sosp.retraining`) is defined by the training
schedule it follows, `original`: then `epochs` is the retraining budget of one prune-retrain
cycle and `cycles` the number of cycles. `bn_l1` adds Network
Slimming's L1 penalty on BatchNorm scales (slimming trains with 1e-4); `cycles=2` runs the
schedule twice (the paper's init-pruning trains the pruned network for two cycles).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sosp.errors import BadInput, UnknownName
from sosp.retraining import SCHEDULES as RETRAIN_SCHEDULES
from sosp.settings import check_number

SCHEDULES = ("step", "cosine", "constant", *RETRAIN_SCHEDULES)


# The range of every numeric recipe key (JSON-schema bounds, as `sosp.settings` reads them).
BOUNDS = {
    "epochs": {"minimum": 1},
    "batch_size": {"minimum": 1},
    "lr": {"exclusiveMinimum": 0},
    "momentum": {"minimum": 0},
    "weight_decay": {"minimum": 0},
    "gamma": {"exclusiveMinimum": 0},
    "bn_l1": {"minimum": 0},
    "test_every": {"minimum": 1},
    "cycles": {"minimum": 1},
}


@dataclass(frozen=True)
class Recipe:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (120, 160)
    gamma: float = 0.1
    bn_l1: float = 0.0
    augment: bool = True
    test_every: int = 1  # evaluate on the test split every k epochs (and after the last)
    cycles: int = 1  # run the schedule this many times (lr restarts); the paper's init-pruning: 2
    name: str = "custom"  # the preset it came from
    original: Recipe | None = None  # a retraining schedule: the training schedule it follows

    @property
    def total_epochs(self) -> int:
        return self.epochs * self.cycles

    def as_dict(self) -> dict:
        """Every key; `original` only where set, so recipes without it keep their dict (and
        the run folders named by its hash)."""
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        original = plain.pop("original")
        plain["milestones"] = list(self.milestones)
        return {**plain, **({"original": original.as_dict()} if original else {})}


PRESETS: dict[str, Recipe] = {
    "cifar": Recipe(name="cifar"),
    "densenet": Recipe(epochs=300, milestones=(150, 225), name="densenet"),
    "imagenet": Recipe(
        epochs=128, batch_size=256, schedule="cosine", milestones=(), name="imagenet"
    ),
    "c_obd_finetune": Recipe(lr=1e-3, epochs=150, milestones=(75, 112), name="c_obd_finetune"),
    "digits": Recipe(
        epochs=30,
        batch_size=64,
        lr=0.05,
        weight_decay=5e-4,
        schedule="cosine",
        milestones=(),
        augment=False,
        name="digits",
    ),
}


def default_preset(model: str, dataset: str) -> str:
    """The paper's recipe for `model` on `dataset`."""
    if dataset in ("digits", "synthetic"):
        return "digits"
    if dataset in ("imagenet", "imagenette"):
        return "imagenet"
    return "densenet" if model.startswith("densenet") else "cifar"


def resolve(
    preset: str, overrides: dict | None = None, recipe_file: str | Path | None = None
) -> Recipe:
    """`preset` with the keys of `recipe_file` (YAML or JSON mapping) and then `overrides`
    applied. Unknown keys and ill-typed values are errors that name the key."""
    if preset not in PRESETS:
        raise UnknownName(f"unknown recipe {preset!r}; known recipes: {', '.join(PRESETS)}")
    changes: dict = {}
    if recipe_file is not None:
        changes.update(_read_mapping(Path(recipe_file)))
    changes.update(overrides or {})
    base = PRESETS[preset]
    known = {f.name: f for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise BadInput(
            f"unknown recipe key(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    if "original" in changes:
        raise BadInput("recipe key 'original' is set by `sosp retrain` (--train-recipe), not here")
    typed = {k: _coerce(k, v, getattr(base, k)) for k, v in changes.items()}
    recipe = dataclasses.replace(base, **typed)
    _check(recipe)
    return recipe


def _read_mapping(path: Path) -> dict:
    """The recipe keys of a YAML (.yaml, .yml) or JSON file; `BadInput` for a missing,
    unreadable, malformed or empty file, or one that holds no mapping."""
    if not path.is_file():
        raise BadInput(f"recipe file {path} does not exist; pass --recipe-file an existing file")
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        text = path.read_text()
        obj = yaml.safe_load(text) if yaml_file else json.loads(text) if text.strip() else None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        what = "YAML" if yaml_file else "JSON (a .yaml or .yml file is read as YAML)"
        raise BadInput(f"recipe file {path} is not valid {what}: {_reason(e)}") from None
    if obj is None:
        raise BadInput(f"recipe file {path} is empty; write recipe keys in it, e.g. epochs: 10")
    if not isinstance(obj, dict):
        raise BadInput(
            f"recipe file {path} must hold a mapping of recipe keys, e.g. epochs: 10, not a "
            f"{type(obj).__name__}"
        )
    return obj


def _reason(e: Exception) -> str:
    """A parse error in one line: YAML's problem and where, else the error's text."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(e).split())


def _coerce(key: str, value, default):
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else value
            return tuple(int(v) for v in items if str(v).strip() != "")
        if isinstance(default, int | float) and (
            isinstance(value, bool) or (isinstance(default, int) and float(value) % 1 != 0)
        ):  # int(1.5) would train 1 epoch, float(True) at lr 1.0
            raise ValueError(value)
        return type(default)(value)
    except (TypeError, ValueError) as e:
        raise BadInput(
            f"recipe key {key!r}: cannot read {value!r} as {type(default).__name__}"
        ) from e


def retraining(original: Recipe, schedule: str, budget: int, cycles: int = 1, **keys) -> Recipe:
    """The recipe of `cycles` prune-retrain cycles of `budget` epochs each by the retraining
    `schedule` (ft, lrw, slr, clr) after training by `original`; `keys`: other recipe keys
    (batch_size, weight_decay, ...; default: the original's)."""
    recipe = dataclasses.replace(
        original, epochs=budget, cycles=cycles, schedule=schedule, original=original, **keys
    )
    _check(recipe)
    return recipe


def _check(r: Recipe) -> None:
    if r.schedule not in SCHEDULES:
        raise BadInput(f"recipe key 'schedule' must be one of {', '.join(SCHEDULES)}")
    if r.schedule in RETRAIN_SCHEDULES:
        if r.original is None:
            raise BadInput(
                f"the retraining schedule {r.schedule!r} follows a training schedule: run it "
                "with `sosp retrain` (which reads the dense run's recipe)"
            )
        if r.schedule == "lrw" and r.epochs > r.original.total_epochs:
            raise BadInput(
                f"learning-rate rewinding replays the last {r.epochs} epochs of a training of "
                f"{r.original.total_epochs}; choose a budget of at most {r.original.total_epochs}"
            )
    for key, bounds in BOUNDS.items():
        check_number(f"recipe key {key!r}", getattr(r, key), bounds)
    if r.nesterov and r.momentum == 0:
        raise BadInput("recipe key 'nesterov' needs a momentum: set momentum > 0 or nesterov=false")
    if any(m < 1 for m in r.milestones):  # milestones past the last epoch are never reached
        raise BadInput(f"recipe key 'milestones' {r.milestones} must be positive epochs")
