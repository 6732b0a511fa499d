"""Shared command helpers: KEY=VALUE options read as JSON where they parse; progress bars
only on a terminal."""

import argparse
import sys

import pytest

from sosp.commands.base import add_no_progress, parse_options, show_progress
from sosp.errors import BadInput


def test_options_are_typed_as_json_where_they_parse():
    got = parse_options(["diagonal=true", "label_samples=10", "norm=l2", "lr=0.5"])
    assert got == {"diagonal": True, "label_samples": 10, "norm": "l2", "lr": 0.5}


def test_a_missing_equals_sign_names_the_flag():
    with pytest.raises(BadInput, match="--set takes KEY=VALUE, not 'epochs'"):
        parse_options(["epochs"], "--set")


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "no_progress", "shown"), [
    (True, False, True), (True, True, False), (False, False, False), (False, True, False),
])  # fmt: skip
def test_bars_show_on_a_terminal_unless_no_progress(monkeypatch, tty, no_progress, shown):
    """Progress bars are drawn only where stderr is a terminal and --no-progress is not given:
    never into a log file or pipe."""
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    parser = argparse.ArgumentParser()
    add_no_progress(parser)
    args = parser.parse_args(["--no-progress"] if no_progress else [])
    assert show_progress(args) is shown
