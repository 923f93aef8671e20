"""The sans-IO HTTP layer (``tokenbucket._http``) imports in one direction only.

Every import of its modules is read from their source, those only type checkers follow
(``if TYPE_CHECKING:``) and those inside functions included: no module imports one that
imports it back, through any number of others, and none imports an edge (the middlewares, the
framework integrations, ``_edges``), which sit above the layer.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "tokenbucket"
LAYER = PACKAGE / "_http"
EDGES = {"asgi", "wsgi", "fastapi", "flask", "django", "demo", "_edges"}


def _imports(path: Path) -> List[str]:
    """The modules ``path`` imports, as dotted names relative to ``tokenbucket``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ["_http"][: 2 - node.level]  # level 1: this package; 2: tokenbucket
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if node.module is None:  # from . import x
                names.extend(f"{module}.{alias.name}".lstrip(".") for alias in node.names)
            else:
                names.append(module)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tokenbucket."):
            names.append(node.module.split(".", 1)[1])  # type: ignore[union-attr]
    return names


def _graph() -> Dict[str, Set[str]]:
    modules = {f"_http.{path.stem}": path for path in LAYER.glob("*.py")}
    modules["_http"] = modules.pop("_http.__init__")
    return {
        name: {each for each in _imports(path) if each in modules and each != name}
        for name, path in modules.items()
    }


def test_no_module_of_the_http_layer_imports_one_that_imports_it_back():
    graph = _graph()
    assert len(graph) > 15  # every module read
    done: Set[str] = set()

    def visit(name: str, path: List[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        for each in sorted(graph[name]):
            visit(each, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_http_layer_imports_no_edge():
    for path in LAYER.glob("*.py"):
        above = {each for each in _imports(path) if each.split(".")[0] in EDGES}
        assert not above, f"{path.name} imports {sorted(above)}"


def test_the_options_know_nothing_of_the_admin_api():
    """The admin API is built from the options (``admin_api``), never by them."""
    graph = _graph()
    assert "_http.admin" in graph["_http.plan"]
    assert not {"_http.admin", "_http.rules", "_http.admin_parse"} & graph["_http.options"]
