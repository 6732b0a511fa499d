"""The config reference: every key of a workflow config, from the JSON schema the Snakefile
validates configs against (completed from sosp's registries)."""

from __future__ import annotations

import json

from workflow.config_schema import config_schema

# (heading, where in the schema, what it is), in the order a config is read
SECTIONS = (
    ("Top level", "", "The keys of a config file."),
    ("An experiment", "$defs/experiment", "One entry of `experiments:`."),
    (
        "Selection settings of one model or method",
        "$defs/selection_settings",
        "One entry of an experiment's `model_settings:` or `method_settings:`: only what differs.",
    ),
    ("A recipe", "$defs/recipe", "An experiment's `train:` or `finetune:`."),
    ("Resources of a rule", "$defs/slurm_resources", "One entry of `resources:`."),
    ("The retraining study", "properties/retraining", "The `retraining:` section."),
    (
        "A retraining experiment",
        "$defs/retraining_experiment",
        "One entry of `retraining: {experiments: ...}`.",
    ),
)


def resolve(schema: dict, where: str) -> dict:
    """The sub-schema at the slash-separated path `where` ("" is the root)."""
    node = schema
    for key in filter(None, where.split("/")):
        node = node[key]
    return node


def type_of(prop: dict, schema: dict) -> str:
    """A short, readable type: `number in (0, 1)`, `one of a, b`, `list of integer`, a link to
    the section of a referenced definition, ..."""
    if "$ref" in prop:
        where = prop["$ref"].lstrip("#/")
        section = next((h for h, w, _ in SECTIONS if w == where), None)
        if section is None:  # a small definition (a ratio): inline
            return type_of(resolve(schema, where), schema)
        return f"[{where.rsplit('/', 1)[-1]}](#{section.lower().replace(' ', '-')})"
    if "enum" in prop:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "oneOf" in prop or "anyOf" in prop:
        return " or ".join(type_of(p, schema) for p in prop.get("oneOf", prop.get("anyOf")))
    kind = prop.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in prop:
        return f"list of {type_of(prop['items'], schema)}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"mapping to {type_of(prop['additionalProperties'], schema)}"
    return kind + bounds(prop)


def bounds(prop: dict) -> str:
    """` in (0, 1]`-style bounds of a number, or ''."""
    low = ("(", prop["exclusiveMinimum"]) if "exclusiveMinimum" in prop else None
    low = low or (("[", prop["minimum"]) if "minimum" in prop else None)
    high = (prop["exclusiveMaximum"], ")") if "exclusiveMaximum" in prop else None
    high = high or ((prop["maximum"], "]") if "maximum" in prop else None)
    if not (low or high):
        return ""
    left = f"{low[0]}{low[1]}" if low else "(-inf"
    right = f"{high[0]}{high[1]}" if high else "inf)"
    return f" in {left}, {right}"


def cell(text: str) -> str:
    """`text` safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(node: dict, schema: dict) -> list[str]:
    """One row per property: key, type, default (or required), description."""
    required = set(node.get("required", ()))
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, prop in node.get("properties", {}).items():
        default = "required" if key in required else "—"
        if "default" in prop:
            default = f"`{json.dumps(prop['default'])}`"
        text = prop.get("description", prop.get("$comment", ""))
        rows.append(f"| `{key}` | {cell(type_of(prop, schema))} | {cell(default)} | {cell(text)} |")
    return rows


def markdown() -> str:
    """The config reference page's body: one table per section."""
    schema = config_schema()
    parts = []
    for heading, where, what in SECTIONS:
        node = resolve(schema, where)
        parts += [f"## {heading}", "", what + " " + node.get("description", ""), ""]
        parts += table(node, schema) + [""]
    return "\n".join(parts)
