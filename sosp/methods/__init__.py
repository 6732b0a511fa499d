"""Pruning methods by name (`sosp.methods.registry`) and what a method is (`base`)."""

from sosp.methods.base import Context, Method, Saliency
from sosp.methods.registry import get, names, options_of, register

__all__ = ["Context", "Method", "Saliency", "get", "names", "options_of", "register"]
