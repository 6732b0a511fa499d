"""Pruning methods by name. A method maps a `Context` (model, structures, data, loss) to a
`Saliency`; selection and surgery are shared. `baselines/` registers the comparison methods
into the same registry, so `sosp.prune(method=...)` reaches all of them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sosp.curvature import Batch
from sosp.errors import UnknownName
from sosp.selection import Saliency
from sosp.structures import Layer, StructureGraph


@dataclass
class Context:
    """Everything a method may use. `batches` is a list, so it can be read more than once."""

    model: nn.Module
    graph: StructureGraph
    batches: list[Batch]
    loss: str
    n_samples: int
    seed: int = 0
    progress: bool = False


Method = Callable[..., Saliency]  # method(ctx, **options) -> Saliency
_REGISTRY: dict[str, Method] = {}


def register(name: str) -> Callable[[Method], Method]:
    def wrap(fn: Method) -> Method:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    _load_builtin()
    if name not in _REGISTRY:
        raise UnknownName(f"unknown method {name!r}; known methods: {', '.join(names())}")
    return _REGISTRY[name]


def options_of(name: str) -> dict[str, object]:
    """The options method `name` accepts, with their defaults."""
    params = list(inspect.signature(get(name)).parameters.values())[1:]
    return {p.name: p.default for p in params}


def generator(ctx: Context) -> torch.Generator:
    """A CPU generator seeded by `ctx.seed`: the only source of randomness a method may use."""
    return torch.Generator().manual_seed(ctx.seed)


def per_layer_scores(ctx: Context, score: Callable[[Layer], torch.Tensor]) -> Saliency:
    """Saliency from `score(layer)` [out_channels] of every prunable layer, in structure order."""
    graph = ctx.graph
    parts = [score(layer).detach().flatten() for layer in graph.layers.values() if layer.prunable]
    for part, (name, idx) in zip(parts, graph.layer_structures().items(), strict=True):
        if len(part) != len(idx):
            raise ValueError(f"score of {name!r} has {len(part)} entries, not {len(idx)}")
    return Saliency(scores=torch.cat(parts).double().cpu())


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import baselines  # noqa: F401
        from sosp.methods import sosp_h, sosp_i  # noqa: F401
