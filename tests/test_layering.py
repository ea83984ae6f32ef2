"""Imports point one way only, downward through the levels of DESIGN.md.

    L0  errors, types, config, arrayfile    (stdlib + numpy)
    L1  table, optim, data                  (numpy + numba; never torch, never grpc)
    L2  ps, checkpoint                      (ps/wire alone imports grpc)
    L3  nn                                  (torch)
    L4  train, serving
    L5  cli
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kraken"

LEVELS = {"errors": 0, "types": 0, "config": 0, "arrayfile": 0, "_jit": 1,
          "table": 1, "optim": 1, "data": 1,
          "ps": 2, "checkpoint": 2,
          "nn": 3,
          "train": 4, "serving": 4,
          "cli": 5}
FORBIDDEN_BELOW = {"torch": 3, "grpc": 2}  # lowest level allowed to import it
GRPC_MODULES = {"kraken/ps/wire.py"}  # the only modules that may import grpc


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def _component(path: Path) -> str:
    if path.name == "__main__.py":  # ``python -m kraken.x``: an entry point, as the CLI is
        return "cli"
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _package(path: Path) -> list[str]:
    """The dotted package ``path`` belongs to: ``kraken/ps/shard.py`` -> ``[kraken, ps]``."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return parts[:-1]  # a module's package; for __init__.py, the package it initialises


def _imports(path: Path, source: str | None = None) -> list[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved.

    ``from . import x`` in ``kraken/ps/shard.py`` is ``kraken.ps.x``; ``from ..table
    import y`` is ``kraken.table``.
    """
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
        elif isinstance(node, ast.ImportFrom):
            package = _package(path)
            assert node.level <= len(package), f"{path}: import beyond the top-level package"
            base = ".".join(package[:len(package) - node.level + 1])
            if node.module:
                names.append(f"{base}.{node.module}")
            else:
                names += [f"{base}.{a.name}" for a in node.names]
    return names


def test_relative_imports_are_resolved() -> None:
    src = "from . import local\nfrom ..table import SparseTable\nfrom .. import nn\n"
    assert _imports(PKG / "ps" / "x.py", src) == ["kraken.ps.local", "kraken.table", "kraken.nn"]
    assert _imports(PKG / "ps" / "__init__.py", "from .local import LocalPS\n") == [
        "kraken.ps.local"]
    assert _imports(PKG / "config.py", "from .errors import ConfigError\n") == [
        "kraken.errors"]


def test_an_upward_relative_import_is_caught() -> None:
    path = PKG / "table" / "x.py"
    with pytest.raises(AssertionError, match="imports kraken.nn"):
        _check(path, _imports(path, "from ..nn import embedding\n"))


def test_every_allow_listed_file_exists() -> None:
    missing = sorted(m for m in GRPC_MODULES if not (PKG.parent / m).is_file())
    assert not missing, f"allow-list names files that do not exist: {missing}"


def test_every_component_has_a_level() -> None:
    comps = {_component(p) for p in _modules()}
    assert comps <= set(LEVELS), f"unassigned components: {comps - set(LEVELS)}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_imports_point_downward(path: Path) -> None:
    _check(path, _imports(path))


def _check(path: Path, imported: list[str]) -> None:
    here = LEVELS[_component(path)]
    rel = path.relative_to(PKG.parent).as_posix()
    for name in imported:
        top = name.split(".")[0]
        if top == "kraken" and "." in name:
            target = name.split(".")[1]
            assert LEVELS.get(target, 0) <= here, f"{rel} (L{here}) imports {name}"
        if top in FORBIDDEN_BELOW:
            assert here >= FORBIDDEN_BELOW[top], f"{rel} (L{here}) imports {top}"
        if top == "grpc":
            assert rel in GRPC_MODULES, f"{rel} imports grpc; only {sorted(GRPC_MODULES)} may"
        if here == 0:
            assert top in sys.stdlib_module_names or top in {"numpy", "kraken"}, (
                f"{rel} (L{here}) imports {top}")


def test_importing_the_table_loads_neither_torch_nor_grpc() -> None:
    code = ("import sys, kraken.table, kraken.optim; "
            "print(sorted(m for m in ('torch', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
