"""No module of the package imports a module that imports it back, at module level or inside
a function: each module's dependencies can be read one way."""

import ast
from pathlib import Path

import pytest

SOSP = Path(__file__).resolve().parents[1] / "sosp"
# Plug-in packages whose members register themselves with their package (a known two-way
# import, restructured separately).
REGISTERING = ("sosp.methods", "sosp.models")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOSP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in SOSP.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The package modules `name` imports anywhere in its text (`from sosp import x` counts as
    importing sosp.x when x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= (subs & MODULES.keys()) or {node.module}
    return found & MODULES.keys()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_imported_back(name):
    if name.startswith(REGISTERING):
        pytest.skip("registering plug-ins import their package")
    back = sorted(other for other in _imports(name) if name in _imports(other))
    assert not back, f"{name} and {back} import each other"
