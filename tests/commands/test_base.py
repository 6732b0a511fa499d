"""Shared command helpers: KEY=VALUE options read as JSON where they parse."""

import pytest

from sosp.commands.base import parse_options
from sosp.errors import BadInput


def test_options_are_typed_as_json_where_they_parse():
    got = parse_options(["diagonal=true", "label_samples=10", "norm=l2", "lr=0.5"])
    assert got == {"diagonal": True, "label_samples": 10, "norm": "l2", "lr": 0.5}


def test_a_missing_equals_sign_names_the_flag():
    with pytest.raises(BadInput, match="--set takes KEY=VALUE, not 'epochs'"):
        parse_options(["epochs"], "--set")
