"""Imports point one way: cli -> runtime -> pipeline -> {store, targets, akosha, manifest,
storage} -> the flat modules (io, errors). Parsed from the source, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import akoshad

ROOT = Path(akoshad.__file__).parent
TOP = {"runtime", "cli"}
LOWER = {"store", "manifest", "targets", "akosha", "storage"}
# The flat modules that are entry points, allowed to reach the command line.
ENTRY_POINTS = {"akoshad.entry", "akoshad.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every akoshad module ``path`` imports, at the top or inside a function."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m == "akoshad" or m.startswith("akoshad.")}


def _layer(module: str) -> str:
    """The subpackage of ``module`` ("" for a flat module of akoshad)."""
    parts = module.split(".")
    if len(parts) < 2:
        return ""
    return parts[1] if (ROOT / parts[1]).is_dir() else ""


def _forbidden(layer: str, target: str) -> bool:
    """Whether a module of ``layer`` may not import one of ``target``."""
    if layer in LOWER | {"pipeline", "restore"} and target in TOP:
        return True
    if layer in LOWER:
        return target == "pipeline"
    if layer == "pipeline":
        return target == "restore"
    return layer == "" and target in TOP | {"pipeline"}


def _violations() -> list[str]:
    found: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        if module in ENTRY_POINTS:
            continue
        layer = _layer(module)
        found += [
            f"{module} -> {imported}"
            for imported in sorted(_imports(path))
            if _forbidden(layer, _layer(imported))
        ]
    return found


def test_the_scan_sees_imports() -> None:
    """The parser finds absolute, relative and lazy imports (so an empty result means
    something)."""
    assert "akoshad.cli.main" in _imports(ROOT / "entry.py")
    assert _layer("akoshad.pipeline.capture.files") == "pipeline"
    assert _layer("akoshad.errors") == ""
    recovery = _imports(ROOT / "pipeline" / "recovery.py")
    assert "akoshad.manifest.read" in recovery  # imported inside a function


def test_the_rules_refuse_upward_imports() -> None:
    assert _forbidden("store", "pipeline")
    assert _forbidden("pipeline", "runtime")
    assert _forbidden("pipeline", "restore")
    assert _forbidden("", "pipeline")  # a flat module (duckdb_worker) is below everything
    assert not _forbidden("runtime", "pipeline")
    assert not _forbidden("pipeline", "store")


def test_imports_point_one_way() -> None:
    assert _violations() == []
