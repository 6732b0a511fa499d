"""The model zoo by name (`sosp.models.registry`) and what a model plug-in provides (`base`)."""

from sosp.models.base import ModelSpec
from sosp.models.registry import create, create_widened, names, register, spec

__all__ = ["ModelSpec", "create", "create_widened", "names", "register", "spec"]
