"""Pruning methods by name: SOSP and its presets (`sosp.methods.sosp_i`, `sosp_h`) and the
comparison methods of `baselines/`, each module listing its `METHODS`."""

from __future__ import annotations

import inspect

from sosp.errors import BadInput, UnknownName
from sosp.methods.base import Method
from sosp.settings import check_type

_REGISTRY: dict[str, Method] = {}


def register(name: str, method: Method) -> None:
    """Make `method(ctx, **options) -> Saliency` available as `sosp.prune(method=name)`."""
    _builtin()
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is registered twice")
    _REGISTRY[name] = method


def _builtin() -> dict[str, Method]:
    """The registry, filled with the built-in methods on first use. They are imported here,
    not at the top: `baselines/` lies outside this package and imports `sosp`, whose
    `__init__` reaches this module, so importing a baseline first must not need it."""
    if not _REGISTRY:
        from baselines import c_obd, gradient_flow, magnitude, random_selection, slimming
        from sosp.methods import sosp_h, sosp_i

        for module in (sosp_i, sosp_h, c_obd, gradient_flow, magnitude, random_selection, slimming):
            for name, method in module.METHODS.items():
                if name in _REGISTRY:
                    raise ValueError(f"method {name!r} is registered twice")
                _REGISTRY[name] = method
    return _REGISTRY


def names() -> list[str]:
    return sorted(_builtin())


def get(name: str) -> Method:
    if name not in _builtin():
        raise UnknownName(f"unknown method {name!r}; known methods: {', '.join(names())}")
    return _REGISTRY[name]


def options_of(name: str) -> dict[str, object]:
    """The options method `name` accepts, with their defaults."""
    params = list(inspect.signature(get(name)).parameters.values())[1:]
    return {p.name: p.default for p in params}


def option_hints(name: str) -> dict[str, object]:
    """The resolved type annotations of method `name`'s options (those that have one)."""
    try:
        params = list(inspect.signature(get(name), eval_str=True).parameters.values())[1:]
    except NameError:  # an annotation naming what its module does not import: unchecked
        return {}
    return {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}


def checked_options(name: str, options: dict) -> dict:
    """`options`, once method `name` exists and takes each of them with a value of its type
    (`BadInput` naming the option otherwise)."""
    known = options_of(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BadInput(
            f"method {name!r} takes no option {', '.join(unknown)}; its options: "
            f"{', '.join(known) or 'none'}"
        )
    hints = option_hints(name)
    for key, value in options.items():
        if key in hints:
            check_type(f"method {name!r} option {key}", value, hints[key])
    return options
