"""Comparison methods, one file each, registered into `sosp.methods` on import."""

from baselines import diagonal, first_order  # noqa: F401
