"""``FeatureSpec``: how a stream turns raw values into feature IDs, as data a server can use.

Serving receives raw records (``{"c0": 17, "site_id": "1fbe01fe", "genres": ["Drama"]}``)
and must map them to the IDs and dense values training saw. Every stream says how, through
its ``features`` property (part of the :class:`~kraken.data.base.Stream` contract): per
sparse field, the :class:`FeatureKind` its raw values follow, and the
:class:`DenseTransform` of its dense values.

=============  ==============================================================================
kind           a value becomes
=============  ==============================================================================
``int``        an integer kept as is (``field_keys(field, v)``): synthetic, MovieLens
               user/movie, hour/weekday fields
``decimal``    its text; a canonical non-negative decimal keeps its value, anything else is
               hashed (CSV columns, MovieLens side features and genres, Avazu numeric columns)
``hex8``       its text; exactly 8 lowercase hex digits keep their value, anything else is
               hashed (Criteo ``C1..C26``, Avazu's hex columns)
=============  ==============================================================================

Dense values are numbers put through the transform (``identity``: missing -> 0; ``log1p``:
Criteo's ``log1p(max(x, 0))``). :mod:`kraken.data.featurize` applies a spec to records.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np

from kraken.config import build_dataclass, check_enum
from kraken.data.base import Schema
from kraken.errors import ConfigError

__all__ = ["DenseTransform", "FeatureKind", "FeatureSpec"]


class FeatureKind(enum.Enum):
    """The rule that maps a raw categorical value to a feature ID (see the module)."""

    INT = "int"
    DECIMAL = "decimal"
    HEX8 = "hex8"

    @classmethod
    def parse(cls, value: Any, path: str = "kind") -> FeatureKind:
        """``value`` (a member or its name in a config, ``"hex8"``) as a member, else
        ``ConfigError`` listing the kinds."""
        return check_enum(path, value, cls)


class DenseTransform(enum.Enum):
    """What a stream does to a raw dense value (missing values read as NaN first)."""

    IDENTITY = "identity"
    LOG1P = "log1p"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``float64[N]`` raw values (NaN = missing) to what the model sees, ``float64[N]``.

        ``IDENTITY``: missing -> 0. ``LOG1P`` (Criteo's counts): ``log1p(max(x, 0))``,
        missing and inf -> 0.
        """
        if self is DenseTransform.IDENTITY:
            return np.nan_to_num(x, nan=0.0)
        return np.log1p(np.maximum(np.nan_to_num(x, nan=0.0, posinf=0.0), 0.0))


def _names(path: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How raw values of a stream's features become a batch (see the module docstring).

    ``kinds[i]`` is the rule of ``fields[i]``, ``jagged_kinds[j]`` that of the values of
    multi-valued ``jagged[j]``; names of the three groups are distinct. Kinds and the
    transform may be given by name (``"hex8"``); they are stored as enums.
    """

    fields: tuple[str, ...]
    kinds: tuple[FeatureKind, ...]
    jagged: tuple[str, ...] = ()
    jagged_kinds: tuple[FeatureKind, ...] = ()
    dense: tuple[str, ...] = ()
    dense_transform: DenseTransform = DenseTransform.IDENTITY

    def __post_init__(self) -> None:
        for name in ("fields", "jagged", "dense"):
            names = _names(name, getattr(self, name))
            for i, n in enumerate(names):
                if not isinstance(n, str) or not n:
                    raise ConfigError(f"{name}[{i}]: expected a feature name, got {n!r}")
            object.__setattr__(self, name, names)
        for name in ("kinds", "jagged_kinds"):
            kinds = _names(name, getattr(self, name))
            object.__setattr__(self, name, tuple(check_enum(f"{name}[{i}]", k, FeatureKind)
                                                 for i, k in enumerate(kinds)))
        object.__setattr__(self, "dense_transform",
                           check_enum("dense_transform", self.dense_transform, DenseTransform))
        if len(self.kinds) != len(self.fields):
            raise ConfigError(f"kinds: {len(self.fields)} fields need as many kinds, "
                              f"got {len(self.kinds)}")
        if len(self.jagged_kinds) != len(self.jagged):
            raise ConfigError(f"jagged_kinds: {len(self.jagged)} multi-valued fields need "
                              f"as many kinds, got {len(self.jagged_kinds)}")
        names = self.fields + self.jagged + self.dense
        if len(set(names)) != len(names):
            raise ConfigError(f"fields: names must be distinct, got {list(names)}")

    @classmethod
    def text(cls, schema: Schema, kind: FeatureKind = FeatureKind.DECIMAL,
             dense_transform: DenseTransform = DenseTransform.IDENTITY) -> FeatureSpec:
        """Every sparse field of ``schema`` (single- and multi-valued) of one ``kind``."""
        return cls(schema.fields, (kind,) * len(schema.fields), schema.jagged,
                   (kind,) * len(schema.jagged), schema.dense, dense_transform)

    @property
    def schema(self) -> Schema:
        return Schema(fields=self.fields, jagged=self.jagged, dense=self.dense)

    def to_dict(self) -> dict[str, Any]:
        return {"fields": list(self.fields), "kinds": [k.value for k in self.kinds],
                "jagged": list(self.jagged),
                "jagged_kinds": [k.value for k in self.jagged_kinds],
                "dense": list(self.dense), "dense_transform": self.dense_transform.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "features") -> FeatureSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ConfigError` naming the bad key."""
        d = dict(d) if isinstance(d, Mapping) else d
        missing = sorted({"fields", "kinds"} - set(d)) if isinstance(d, dict) else []
        if missing:
            raise ConfigError(f"{path}: missing key(s) {missing}")
        spec: FeatureSpec = build_dataclass(cls, d, path)
        return spec
