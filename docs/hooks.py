"""MkDocs hook: a page line `<!-- generate KIND [NAME] -->` becomes the Markdown that
docs/generators/ makes for KIND (the command reference from the parsers, the config reference
from the schema, the prune settings and methods from the code, a speed table from its CSV),
so the site shows the code's and the data's own words, never a copy typed by hand."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mkdocs.exceptions import PluginError  # noqa: E402

from docs.generators import commands, config, settings, speed  # noqa: E402

MARKER = re.compile(r"^<!-- generate (\w+)(?: (\S+))? -->$", re.M)
GENERATORS = {
    "commands": lambda _: commands.markdown(),
    "config": lambda _: config.markdown(),
    "speed": speed.section,
    "settings": lambda _: settings.settings_table(),
    "methods": lambda _: settings.methods_table(),
}


def expand(markdown: str) -> str:
    """`markdown` with every marker replaced by what its generator makes."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](m.group(2)), markdown)


def on_page_markdown(markdown: str, **_) -> str:
    return expand(markdown)


def on_pre_build(**_) -> None:
    """Every benchmark CSV has its table: a new one without a `speed.TABLES` entry fails."""
    if missing := speed.unlisted():
        raise PluginError(
            f"no speed table for results/benchmarks/{missing[0]}.csv: add it to "
            "docs/generators/speed.py's TABLES and a marker for it to docs/speed.md"
        )
