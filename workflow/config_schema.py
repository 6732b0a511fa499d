"""The workflow config's JSON schema, completed from sosp's registries: the Snakefile validates
every config against it, and the docs' config reference is generated from it."""

from __future__ import annotations

import json
from pathlib import Path

from sosp import counting, data, latency
from sosp.settings import PruneSettings, ratio_schema

SCHEMA = Path(__file__).parent / "schemas" / "config.schema.json"

# The prune settings an experiment sets (and model_settings/method_settings override); their
# schema, defaults included, comes from sosp.settings.PruneSettings. Each is part of every prune
# job's hashed settings (common.smk): a name added here renames every prune run folder.
SELECTION_SETTINGS = ("budget", "scope", "max_layer_fraction", "kernel_scaling", "n_samples")
# Settings an experiment (or an override) may set, hashed into a prune job's settings only
# where set, so that adding one renames no existing run folder.
OPTIONAL_SETTINGS = ("coupling", "round_to", "shuffle_within_layers")


def config_schema() -> dict:
    """schemas/config.schema.json completed from sosp: each experiment's selection settings
    with their defaults, $defs/selection_settings without (an override names only what
    differs), $defs/ratio, the datasets of sosp.data's registry (of the SOSP and the retraining
    experiments), the MAC conventions of sosp.counting's and the latency block's precisions
    and layouts (sosp.latency's)."""
    schema = json.loads(SCHEMA.read_text())
    defs = schema["$defs"]
    for kind in ("experiment", "retraining_experiment"):
        defs[kind]["properties"]["dataset"] = {"enum": data.names()}
    others = sorted(set(counting.CONVENTIONS) - {"actual"})
    defs["experiment"]["properties"]["mac_conventions"]["items"] = {"enum": others}
    timed = defs["experiment"]["properties"]["latency"]["properties"]
    timed["precision"]["enum"] = list(latency.PRECISIONS)
    timed["layout"]["enum"] = list(latency.LAYOUTS)
    defs["ratio"] = ratio_schema()
    every = SELECTION_SETTINGS + OPTIONAL_SETTINGS
    defs["selection_settings"] = PruneSettings.json_schema(every, defaults=False)
    experiment = PruneSettings.json_schema(SELECTION_SETTINGS)["properties"]
    experiment.update(PruneSettings.json_schema(OPTIONAL_SETTINGS, defaults=False)["properties"])
    defs["experiment"]["properties"].update(experiment)
    return schema
