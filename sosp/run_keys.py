"""Where a result lives: a readable prefix and a hash of the canonical settings that made it.

The workflow, the CLI's users and the tests all derive a run's folder from the same settings,
so one dense checkpoint per (model, dataset, seed, recipe) is trained once and found by every
method and ratio that needs it, and a changed setting never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json


def canonical(settings: dict) -> str:
    """`settings` as JSON with sorted keys and no spaces: equal settings, equal text."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def settings_hash(settings: dict, length: int = 10) -> str:
    return hashlib.sha256(canonical(settings).encode()).hexdigest()[:length]


def run_key(prefix: str, settings: dict) -> str:
    """'<prefix>-<hash>', e.g. 'resnet20-digits-s0-3f9a0c1b2d'."""
    return f"{prefix}-{settings_hash(settings)}"
