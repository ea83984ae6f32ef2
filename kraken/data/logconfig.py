"""``LogConfig``: the ``[log]`` section of a run file, an event log on Redis Streams.

::

    [log]
    url = "redis://127.0.0.1:6379/0"
    prefix = "kraken"             # keys {prefix}:impressions:{p} and {prefix}:actions:{p}
    partitions = 4                # p = request id mod partitions
    window_s = 300                # join window, event-time seconds
    label_actions = ["click"]     # action types that make a positive
    action_types = ["click", "like"]
    [log.schema]                  # the raw columns of an impression, as the CSV source's
    categorical = ["user", "item"]
    dense = ["price"]

Impression entries hold ``rid`` (request id, unsigned 64-bit decimal), ``ts`` (event time,
integer unix seconds) and one field per schema column with the raw string the CSV source
would read; action entries hold ``rid``, ``ts`` and ``type``. The schema's columns become
IDs and dense values exactly as :class:`~kraken.data.tabular.TabularStream` makes them,
so ``kraken serve`` featurizes requests identically. Validated on construction; every
error names its key (``log.schema.dense[0]: ...``). Opening nothing: no server is
contacted until the stream reads.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
from collections.abc import Mapping
from typing import Any

from kraken.config import build_dataclass, check_enum, check_int, check_positive
from kraken.data.base import Schema
from kraken.data.join import JoinConfig
from kraken.errors import ConfigError
from kraken.table.keys import FIELD_BITS

__all__ = ["LogConfig", "LogSchema", "StartAt"]

RESERVED = ("rid", "ts", "type")  # entry fields of the format itself
MAX_ACTION_TYPES = 127  # action kinds travel as int8


def _names(path: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"{path}: expected a list of names, got {type(value).__name__} "
                          f"{value!r}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{path}[{i}]: expected a non-empty name, got {v!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class LogSchema:
    """The raw columns of an impression entry: the CSV source's ``categorical``,
    ``multi_valued`` (``multi_sep``-joined) and ``dense`` columns; the label comes from
    the join and the time from ``ts``. Column names are distinct and none is a field
    of the format itself (``rid``, ``ts``, ``type``)."""

    categorical: tuple[str, ...] = ()
    multi_valued: tuple[str, ...] = ()
    multi_sep: str = "|"
    dense: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for group in ("categorical", "multi_valued", "dense"):
            names = _names(group, getattr(self, group))
            object.__setattr__(self, group, names)
            for i, n in enumerate(names):
                if n in RESERVED:
                    raise ConfigError(f"{group}[{i}]: {n!r} is a field of the entry format "
                                      f"itself ({list(RESERVED)}); rename the column")
                if n in seen:
                    raise ConfigError(f"{group}[{i}]: column {n!r} is already used as "
                                      f"{seen[n]}")
                seen[n] = f"{group}[{i}]"
        if not seen:
            raise ConfigError("categorical: the schema names no column at all")
        if not isinstance(self.multi_sep, str) or not self.multi_sep:
            raise ConfigError(f"multi_sep: expected a non-empty string, got {self.multi_sep!r}")
        n_sparse = len(self.categorical) + len(self.multi_valued)
        if n_sparse > 1 << FIELD_BITS:
            raise ConfigError(f"categorical: at most {1 << FIELD_BITS} sparse fields fit the "
                              f"key layout, got {n_sparse}")

    @property
    def schema(self) -> Schema:
        return Schema(fields=self.categorical, jagged=self.multi_valued, dense=self.dense)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.categorical + self.multi_valued + self.dense


class StartAt(enum.Enum):
    """Where a run without a checkpoint starts reading: the oldest entry the server keeps
    (``earliest``; entries trimmed before are reported as a gap) or after the newest one
    (``latest``)."""

    EARLIEST = "earliest"
    LATEST = "latest"


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """The ``[log]`` section (see the module docstring).

    ``schema``: :class:`LogSchema` (a mapping is converted). ``partitions`` P: the log
    keys; this consumer reads partitions ``rank, rank + world, ...``. ``consumer``: its
    name in the consumer groups (default ``{hostname}-{rank}``, stable across restarts).
    ``block_ms``: longest blocking read when caught up (an empty batch follows each).
    ``read_count``: entries read per key and round trip. ``max_value_bytes``: a longer
    field makes its entry malformed. ``window_s``, ``max_pending``, ``label_actions``,
    ``action_types``: the joiner's (:class:`kraken.data.join.JoinConfig`).
    ``backoff_s`` / ``max_backoff_s``: first and longest wait between reconnection
    attempts while the server is unreachable (doubling). ``audit``: a directory where
    the stream writes which entries it yielded and which positions it handed out (a
    crash drill's evidence; off by default).
    """

    schema: LogSchema
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "kraken"
    partitions: int = 1
    group: str = "kraken"
    consumer: str | None = None
    rank: int = 0
    world: int = 1
    block_ms: int = 200
    read_count: int = 4096
    start: StartAt = StartAt.EARLIEST
    window_s: int = 300
    max_pending: int = 1_000_000
    label_actions: tuple[str, ...] = ("click",)
    action_types: tuple[str, ...] = ("click",)
    max_value_bytes: int = 4096
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    audit: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.schema, Mapping):
            object.__setattr__(self, "schema", build_dataclass(LogSchema, dict(self.schema),
                                                               "schema"))
        if not isinstance(self.schema, LogSchema):
            raise ConfigError(f"schema: expected a table, got {type(self.schema).__name__}")
        if not isinstance(self.url, str) or not self.url.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ConfigError(f"url: expected redis://host:port/db, got {self.url!r}")
        for name in ("prefix", "group"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{name}: expected a non-empty string, got {v!r}")
        check_int("partitions", self.partitions, lo=1)
        check_int("world", self.world, lo=1)
        check_int("rank", self.rank, lo=0, hi=self.world - 1)
        if self.world > self.partitions:
            raise ConfigError(f"world: {self.world} consumers need at least as many "
                              f"partitions, got {self.partitions}")
        if self.consumer is None:
            object.__setattr__(self, "consumer", f"{socket.gethostname()}-{self.rank}")
        elif not isinstance(self.consumer, str) or not self.consumer:
            raise ConfigError(f"consumer: expected a non-empty string, got {self.consumer!r}")
        check_int("block_ms", self.block_ms, lo=1, hi=60_000)
        check_int("read_count", self.read_count, lo=1)
        object.__setattr__(self, "start", check_enum("start", self.start, StartAt))
        check_int("window_s", self.window_s, lo=1)
        check_int("max_pending", self.max_pending, lo=1)
        types = _names("action_types", self.action_types)
        if not types:
            raise ConfigError("action_types: at least one action type is needed")
        if len(set(types)) != len(types) or len(types) > MAX_ACTION_TYPES:
            raise ConfigError(f"action_types: at most {MAX_ACTION_TYPES} distinct names, "
                              f"got {list(types)}")
        labels = _names("label_actions", self.label_actions)
        for i, a in enumerate(labels):
            if a not in types:
                raise ConfigError(f"label_actions[{i}]: {a!r} is not one of action_types "
                                  f"{list(types)}")
        object.__setattr__(self, "action_types", types)
        object.__setattr__(self, "label_actions", labels)
        check_int("max_value_bytes", self.max_value_bytes, lo=1)
        check_positive("backoff_s", self.backoff_s)
        if check_positive("max_backoff_s", self.max_backoff_s) < self.backoff_s:
            raise ConfigError(f"max_backoff_s: must be >= backoff_s {self.backoff_s}, "
                              f"got {self.max_backoff_s}")
        if self.audit is not None and (not isinstance(self.audit, str) or not self.audit):
            raise ConfigError(f"audit: expected a directory path, got {self.audit!r}")

    @classmethod
    def from_dict(cls, d: Any, path: str = "log") -> LogConfig:
        """From the section as written; errors are prefixed with ``path``."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(d).__name__}")
        return build_dataclass(cls, dict(d), path)  # type: ignore[no-any-return]

    @property
    def owned(self) -> tuple[int, ...]:
        """The partitions this consumer reads."""
        return tuple(range(self.rank, self.partitions, self.world))

    def impressions_key(self, p: int) -> str:
        return f"{self.prefix}:impressions:{p}"

    def actions_key(self, p: int) -> str:
        return f"{self.prefix}:actions:{p}"

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys read, in position order: every owned partition's impressions, then
        every owned partition's actions."""
        return (tuple(self.impressions_key(p) for p in self.owned)
                + tuple(self.actions_key(p) for p in self.owned))

    def join_config(self) -> JoinConfig:
        """The joiner's :class:`kraken.data.join.JoinConfig` from this section."""
        return JoinConfig(window_s=self.window_s, max_pending=self.max_pending,
                          label_actions=self.label_actions, action_types=self.action_types,
                          wait_for_score=True)  # the trainer scores every impression
