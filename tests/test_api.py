"""The curated public API: pinned so that changes to it are deliberate.

Each exported name is the object its home module defines (and lists in its ``__all__``),
re-exported by its component package (``kraken.table``, ...); every error class is exported
from both ``kraken`` and ``kraken.errors``; and the error classes form exactly the tree drawn
in ``kraken/errors.py``'s docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

import kraken
import kraken.errors

EXPECTED = [
    "FTRL", "LFU", "LRU", "SGD", "TTL", "AdaGrad", "Adam", "Always", "CapacityError",
    "CheckpointError", "CheckpointMismatchError", "CheckpointVersionError", "ConfigError",
    "CorruptCheckpointError", "CountMin", "DTypeError", "DataError", "InputError", "KrakenError",
    "NonFiniteError", "Normal", "Pooling", "Precision", "Probabilistic", "RAdaGrad",
    "RowWiseAdaGrad",
    "ShapeError", "SparseOptimizer", "SparseTable", "StaleVersionError", "TableConfig",
    "TableDelta", "TableStats", "Uniform", "Zeros", "__version__", "field_keys",
    "NotReadyError", "VersionGapError", "TransportError", "LifecycleError",
    "TrainingDivergedError",
]

ERROR_CLASSES = sorted(
    name for name, obj in vars(kraken.errors).items()
    if inspect.isclass(obj) and issubclass(obj, BaseException)
    and obj.__module__ == "kraken.errors")


def test_all_is_pinned() -> None:
    assert sorted(kraken.__all__) == sorted(EXPECTED)
    assert len(set(kraken.__all__)) == len(kraken.__all__), "a name is listed twice"


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"__version__"}))
def test_each_name_is_its_home_modules_object(name: str) -> None:
    obj = getattr(kraken, name)
    home = obj.__module__
    assert home.startswith("kraken.") and home != "kraken", f"{name} is defined in {home}"
    module = importlib.import_module(home)
    assert getattr(module, name) is obj, f"kraken.{name} is not {home}.{name}"
    if hasattr(module, "__all__"):
        assert name in module.__all__, f"{name} is missing from {home}.__all__"
    component = importlib.import_module(".".join(home.split(".")[:2]))  # kraken.table, ...
    if component is not module:
        assert getattr(component, name) is obj and name in component.__all__, (
            f"{name} is not exported by {component.__name__}")


def test_version_is_a_release_string() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", kraken.__version__), kraken.__version__


def test_every_error_is_exported_from_both_places() -> None:
    assert sorted(kraken.errors.__all__) == ERROR_CLASSES
    assert set(ERROR_CLASSES) <= set(kraken.__all__), set(ERROR_CLASSES) - set(kraken.__all__)
    for name in ERROR_CLASSES:
        assert getattr(kraken, name) is getattr(kraken.errors, name)


def _drawn_tree() -> dict[str, str | None]:
    """``{class name: parent name}`` from the ASCII tree in the errors module docstring."""
    doc = kraken.errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in doc.splitlines():
        root = re.fullmatch(r"\s*(KrakenError)\s*", line)
        node = re.match(r"^(\s*)((?:│   |    )*)[├└]── (\w+)", line)
        if root:
            parents["KrakenError"], stack = None, ["KrakenError"]
        elif node and stack:
            depth = len(node.group(2)) // 4 + 1
            stack = stack[:depth] + [node.group(3)]
            parents[node.group(3)] = stack[depth - 1]
    return parents


def test_the_error_tree_is_the_one_drawn_in_the_docstring() -> None:
    drawn = _drawn_tree()
    assert sorted(drawn) == ERROR_CLASSES, "the drawing and the classes list different errors"
    for name, parent in drawn.items():
        cls = getattr(kraken.errors, name)
        if parent is None:
            assert cls.__bases__ == (Exception,)
            continue
        kraken_bases = [b for b in cls.__bases__ if issubclass(b, kraken.errors.KrakenError)]
        assert [b.__name__ for b in kraken_bases] == [parent], (
            f"{name} derives from {kraken_bases}, the docstring draws it under {parent}")


def test_the_drawing_is_read_as_a_tree() -> None:
    """The parser above is itself checked: a nested node gets its indented parent."""
    tree = _drawn_tree()
    assert tree["ShapeError"] == "InputError" and tree["InputError"] == "KrakenError"
    assert tree["CheckpointMismatchError"] == "CheckpointError"
