"""Shared configuration vocabulary: enums and validators for frozen dataclass configs.

Configs across Kraken are frozen dataclasses validated in ``__post_init__``;
an invalid value raises :class:`~kraken.errors.ConfigError` whose message starts
with the dotted path of the offending key (``table.eviction.ttl: must be > 0, got -3``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from kraken.errors import ConfigError

__all__ = ["Pooling", "Precision", "Tagged", "build_dataclass", "build_from_dict",
           "check_enum", "check_fields", "check_fraction", "check_int",
           "check_number", "check_positive", "read_config_file", "register"]


class Precision(enum.Enum):
    """Storage precision of embedding weights. Optimizer state is always float32.

    ``FP16`` and ``BF16`` halve the weight memory; updates are computed in float32
    and written back with stochastic rounding so small updates are not lost on average.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def itemsize(self) -> int:
        """Bytes per stored weight element."""
        return 4 if self is Precision.FP32 else 2


class Pooling(enum.Enum):
    """How the values of a multi-valued field become one vector per sample.

    ``SUM`` adds the rows of the sample's values, ``MEAN`` averages them; a sample with
    no values gets the zero vector either way.
    """

    SUM = "sum"
    MEAN = "mean"


E = TypeVar("E", bound=enum.Enum)


def check_enum(path: str, value: Any, cls: type[E]) -> E:
    """``value`` (a member of enum ``cls`` or a member's value) as a member of ``cls``."""
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(f"{path}: expected one of {[m.value for m in cls]}, "
                          f"got {value!r}") from None


def check_number(path: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> float:
    """Return ``value`` as float if it is a finite real within the bounds, else raise.

    Bools are rejected: ``True`` is not a learning rate.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ConfigError(f"{path}: must be a number, got NaN")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(f"{path}: must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(f"{path}: must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return v


def check_positive(path: str, value: Any) -> float:
    """A finite number > 0."""
    v = check_number(path, value, lo=0.0, lo_open=True)
    if math.isinf(v):
        raise ConfigError(f"{path}: must be finite, got {value!r}")
    return v


def check_fraction(path: str, value: Any, *, open_low: bool = False) -> float:
    """A number in ``[0, 1]`` (or ``(0, 1]`` with ``open_low``)."""
    return check_number(path, value, lo=0.0, hi=1.0, lo_open=open_low)


def check_int(path: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """An ``int`` (not bool, not float) within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"{path}: must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"{path}: must be <= {hi}, got {value}")
    return value


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sections of a run file, TOML (any suffix but ``.json``) or JSON, unvalidated.

    Raises :class:`ConfigError` naming the file when it is missing or unparsable.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    try:
        doc = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: "
                          f"{exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: expected a table of sections")
    return doc


def check_fields(cls: Any, d: Any, path: str, ignore: tuple[str, ...] = ()) -> None:
    """Raise unless ``d`` is a dict whose keys are all fields of dataclass ``cls``."""
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a table, got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(d) - fields - set(ignore))
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {extra}; allowed: {sorted(fields)}")


def _check_required(cls: Any, d: dict[str, Any], path: str) -> None:
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.init and f.name not in d:
            raise ConfigError(f"{path}.{f.name}: missing (required)")


def build_dataclass(cls: Any, d: Any, path: str) -> Any:
    """``cls(**d)`` for a frozen-dataclass config, with path-precise errors.

    Unknown keys, missing required keys (``{path}.{key}: missing (required)``) and
    the ``ConfigError`` of ``cls.__post_init__`` (its message relative to the
    dataclass, ``lr: must be > 0``) all come out prefixed with ``path``.
    """
    check_fields(cls, d, path)
    _check_required(cls, d, path)
    try:
        return cls(**d)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc}") from None


def build_from_dict(registry: dict[str, Any], d: Any, path: str) -> Any:
    """Build ``registry[d['type']](**rest)`` with path-precise errors.

    Used to rebuild policies, initialisers and optimizers from saved configs and
    config files: unknown types and unknown keys list what is allowed.
    """
    if not isinstance(d, dict) or "type" not in d:
        raise ConfigError(f"{path}: expected a table with a 'type' key, one of {sorted(registry)}")
    cls = registry.get(d["type"])
    if cls is None:
        raise ConfigError(f"{path}.type: unknown {d['type']!r}; allowed: {sorted(registry)}")
    check_fields(cls, d, path, ignore=("type",))
    _check_required(cls, d, path)
    try:
        return cls(**{k: v for k, v in d.items() if k != "type"})
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc}") from None


def register(registry: dict[str, Any], name: str, obj: Any, what: str) -> Any:
    """Add ``obj`` to ``registry`` under ``name`` and return it; names are unique.

    Every registry of Kraken (models, streams, sparse optimizers) adds entries through
    this function, so all of them answer a duplicate alike: registering the same
    object again is a no-op, another object under a taken name raises
    :class:`ConfigError` (``model 'deepfm' is already registered (kraken....DeepFM)``).
    """
    old = registry.get(name)
    if old is not None and old != obj:
        where = f"{getattr(old, '__module__', '?')}.{getattr(old, '__qualname__', old)}"
        raise ConfigError(f"{what} {name!r} is already registered ({where}); "
                          f"names are unique")
    registry[name] = obj
    return obj


class Tagged:
    """Mixin for frozen-dataclass choices (policies, optimizers, initialisers).

    ``kind`` names the choice in config files and saved tables; ``to_dict`` gives
    ``{"type": kind, **fields}``, which :func:`build_from_dict` inverts.
    """

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]
