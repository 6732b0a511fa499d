"""The library's reference tables: every `PruneSettings` field (the keywords of `sosp.prune`,
the options of `sosp prune`, the keys of a config experiment) and every registered method with
its own options, from the code itself."""

from __future__ import annotations

import dataclasses
import inspect
import json

from sosp import methods
from sosp.settings import BOUND_KEYS, PruneSettings

BOUND_TEXT = {
    "minimum": ">= {}",
    "exclusiveMinimum": "> {}",
    "maximum": "<= {}",
    "exclusiveMaximum": "< {}",
}


def allowed(meta: dict) -> str:
    """What a field allows, from its metadata: its choices or its bounds."""
    if "choices" in meta:
        return ", ".join(f"`{c}`" for c in meta["choices"])
    return ", ".join(BOUND_TEXT[k].format(meta[k]) for k in BOUND_KEYS if k in meta)


def settings_table() -> str:
    """One row per `PruneSettings` field: keyword, default, allowed values, meaning."""
    rows = ["| keyword | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(PruneSettings):
        default = json.dumps(list(f.default) if isinstance(f.default, tuple) else f.default)
        meaning = f.metadata["help"].replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{default}` | {allowed(f.metadata)} | {meaning} |")
    return "\n".join(rows)


def summary(name: str) -> str:
    """The first paragraph of method `name`'s docstring (else its module's), one table cell."""
    method = methods.registry.get(name)
    doc = inspect.getdoc(method) or inspect.getdoc(inspect.getmodule(method)) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def methods_table() -> str:
    """One row per registered method: name, what it scores, its options and their defaults."""
    rows = ["| method | what it is | options (default) |", "| --- | --- | --- |"]
    for name in methods.names():
        options = methods.options_of(name)
        text = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in options.items()) or "—"
        rows.append(f"| `{name}` | {summary(name)} | {text} |")
    return "\n".join(rows)
