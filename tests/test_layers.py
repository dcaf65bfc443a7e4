"""Imports point down the layers: schemas < infra < quality < streams < serving < freshlabel.

Data flows one way (topic -> job -> topic -> sink -> table -> consumer) and so do imports:
a package may import from its own layer and the ones below it, never from above, and only
`freshlabel/` (the command line, the demo, the deployment renderer) composes them all.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("schemas", "infra", "quality", "streams", "serving", "freshlabel")


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def upward_imports(package: str) -> list[str]:
    """Every import in `package` of a layer above it, as `file:line imports module`."""
    rank = LAYERS.index(package)
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > rank:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", LAYERS)
def test_imports_only_point_down(package: str) -> None:
    assert upward_imports(package) == []


def test_the_rule_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "x.py").write_text("def f():\n    from serving.client import C\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert upward_imports("infra") == ["infra/x.py:2 imports serving.client"]
