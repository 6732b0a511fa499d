"""Comparison methods, one file each, registered into `sosp.methods` on import."""

from baselines import c_obd, diagonal, first_order, magnitude, random_selection, slimming  # noqa: F401
