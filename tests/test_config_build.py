"""``kraken.config``: the one way a dict becomes a config, with path-precise errors."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import pytest

from kraken.config import Tagged, build_dataclass, build_from_dict, check_int
from kraken.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner(Tagged):
    kind: ClassVar[str] = "inner"
    size: int
    note: str = ""

    def __post_init__(self) -> None:
        check_int("size", self.size, lo=1)


@pytest.mark.parametrize(("d", "message"), [
    ({"size": 2, "sise": 3}, r"^a\.b: unknown key\(s\) \['sise'\]; allowed: \['note', 'size'\]$"),
    ({"note": "x"}, r"^a\.b\.size: missing \(required\)$"),
    ({"size": 0}, r"^a\.b\.size: must be >= 1, got 0$"),
    ([1], r"^a\.b: expected a table, got list$"),
])
def test_build_dataclass_names_the_path(d: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_dataclass(Inner, d, "a.b")


def test_build_dataclass_builds() -> None:
    assert build_dataclass(Inner, {"size": 3}, "x") == Inner(size=3)


@pytest.mark.parametrize(("d", "message"), [
    ({"type": "outer"}, r"^p\.type: unknown 'outer'; allowed: \['inner'\]$"),
    ({"size": 1}, r"^p: expected a table with a 'type' key"),
    ({"type": "inner"}, r"^p\.size: missing \(required\)$"),
    ({"type": "inner", "size": 1, "x": 0}, r"^p: unknown key\(s\) \['x'\]"),
])
def test_build_from_dict_names_the_path(d: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_from_dict({"inner": Inner}, d, "p")


def test_build_from_dict_inverts_to_dict() -> None:
    x = Inner(size=4, note="n")
    assert build_from_dict({"inner": Inner}, x.to_dict(), "p") == x
