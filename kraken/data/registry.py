"""``open_stream``: build a stream from a name (or ``name:path``) and keyword arguments.

    open_stream("synthetic", n_records=10_000, seed=1)       SyntheticConfig fields
    open_stream("criteo", path="train.txt")                  or "criteo:train.txt"
    open_stream("avazu", path="train.csv")                   or "avazu:train.csv"
    open_stream("movielens-1m", root="ml-1m")                or "movielens-1m:ml-1m"
    open_stream("movielens-100k", root="ml-100k")            or "movielens-100k:ml-100k"
    open_stream("csv", path="t.csv", schema={...})           or "csv:t.csv"; also Parquet
    open_stream("redis", url="redis://h:6379/0", schema={...})   LogConfig fields (an event
                                                             log; a run file's [log] section)

Configuration errors name their key as in a run config's ``data`` section
(``data.source``, ``data.path``). A path ending in ``.csv``, ``.tsv``, ``.parquet``
or ``.pq`` (optionally ``.gz``) without a name opens as ``csv``.

``stream_arguments`` runs every check that needs no file (a run config validates its
``data`` section with it); ``register_stream`` adds a name, refusing a taken one as
every registry does.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kraken.config import register
from kraken.data.avazu import AvazuStream
from kraken.data.base import Stream
from kraken.data.criteo import CriteoStream
from kraken.data.logconfig import LogConfig
from kraken.data.movielens import MovieLensStream
from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.data.tabular import TabularSchema, TabularStream
from kraken.errors import ConfigError

__all__ = ["STREAM_NAMES", "open_stream", "register_stream", "stream_arguments"]


def _synthetic(config: SyntheticConfig) -> SyntheticStream:
    return SyntheticStream(config)


def _redis(config: LogConfig) -> Stream:
    try:
        from kraken.data.redislog import RedisLogStream  # noqa: PLC0415 - redis is optional
    except ImportError as exc:
        raise ConfigError("source: reading an event log needs the package 'redis', which is "
                          "not installed (pip install 'kraken-rec[log]', or pip install "
                          "redis)") from exc
    return RedisLogStream(config)


def _movielens(kind: str) -> Callable[..., MovieLensStream]:
    def build(root: str | Path) -> MovieLensStream:
        return MovieLensStream(root, kind)
    return build


_BUILDERS: dict[str, Callable[..., Stream]] = {}  # name -> build(**kwargs) -> Stream
_LOCATIONS: dict[str, str] = {}  # name -> the keyword "name:value" fills, or ""


def register_stream(name: str, build: Callable[..., Stream], location: str = "",
                    ) -> Callable[..., Stream]:
    """Make ``open_stream(name, **kw)`` call ``build(**kw)``; names are unique.

    ``location`` names the keyword that ``"name:value"`` fills (``"path"``), ``""`` if
    the stream reads no file. A taken name raises :class:`ConfigError`, as every
    registry does (:func:`kraken.config.register`); registering the same entry again
    is a no-op.
    """
    if _LOCATIONS.get(name, location) != location:
        raise ConfigError(f"stream {name!r} is already registered (reading "
                          f"{_LOCATIONS[name] or 'no file'}); names are unique")
    register(_BUILDERS, name, build, "stream")
    _LOCATIONS[name] = location
    return build


for _name, _build, _location in (
        ("synthetic", _synthetic, ""),
        ("criteo", CriteoStream, "path"),
        ("avazu", AvazuStream, "path"),
        ("movielens-1m", _movielens("ml-1m"), "root"),
        ("movielens-100k", _movielens("ml-100k"), "root"),
        ("csv", TabularStream, "path"),
        ("redis", _redis, "")):
    register_stream(_name, _build, _location)
STREAM_NAMES = tuple(_BUILDERS)  # the built-in streams
_TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def _allowed_keys(name: str) -> list[str]:
    if name == "synthetic":
        return ["config", *inspect.signature(SyntheticConfig).parameters]
    if name == "redis":
        return ["config", *inspect.signature(LogConfig).parameters]
    return list(inspect.signature(_BUILDERS[name]).parameters)


def stream_arguments(name_or_path: str | Path, options: Mapping[str, Any],
                     ) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` such that the stream's builder accepts ``kwargs``; opens nothing.

    Checks everything that does not need the file: the name (or a tabular path), that
    a ``name:location`` source does not repeat its keyword, unknown and missing keys, a
    CSV ``schema`` (a mapping becomes a :class:`TabularSchema`) and the synthetic
    stream's fields (they become its ``config``). A :class:`ConfigError` names the key
    relative to a run config's ``data`` section: ``source: unknown stream 'kafka'; ...``,
    ``path: required for 'criteo'``, ``schema.label: missing (required)``.
    """
    text = str(name_or_path)
    kw = dict(options)
    name, _, rest = text.partition(":")
    if name not in _BUILDERS:
        p = Path(text)
        suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
        if suffixes and suffixes[-1] in _TABULAR_SUFFIXES:
            name, rest = "csv", text
        else:
            raise ConfigError(f"source: unknown stream {text!r}; allowed names: "
                              f"{list(_BUILDERS)} (optionally as 'name:path'), or a path "
                              f"ending in {list(_TABULAR_SUFFIXES)}")
    build, location = _BUILDERS[name], _LOCATIONS[name]
    if rest:
        if not location:
            raise ConfigError(f"source: {name!r} reads no file, got {text!r}")
        if location in kw:
            raise ConfigError(f"{location}: given twice, in {text!r} and as a keyword")
        kw[location] = rest
    allowed = _allowed_keys(name)
    extra = sorted(set(kw) - set(allowed))
    if extra:
        raise ConfigError(f"{extra[0]}: unknown key(s) {extra} for {name!r}; "
                          f"allowed: {allowed}")
    if name == "synthetic":
        return name, {"config": _synthetic_config(kw)}
    if name == "redis":
        return name, {"config": _log_config(kw)}
    needed = [k for k, p in inspect.signature(build).parameters.items()
              if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
              and k not in kw]
    if needed:
        raise ConfigError(f"{needed[0]}: required for {name!r}")
    if name == "csv" and isinstance(kw["schema"], Mapping):
        kw["schema"] = TabularSchema.from_dict(dict(kw["schema"]))
    return name, kw


def _synthetic_config(kw: dict[str, Any]) -> SyntheticConfig:
    if "config" in kw:
        if len(kw) > 1:
            raise ConfigError(f"config: pass either config or SyntheticConfig fields, "
                              f"got {sorted(kw)}")
        if not isinstance(kw["config"], SyntheticConfig):
            raise ConfigError(f"config: expected a SyntheticConfig, got "
                              f"{type(kw['config']).__name__}")
        return kw["config"]
    return SyntheticConfig(**kw)


def _log_config(kw: dict[str, Any]) -> LogConfig:
    if "config" in kw:
        if len(kw) > 1 or not isinstance(kw["config"], LogConfig):
            raise ConfigError(f"config: pass either a LogConfig or its fields, got "
                              f"{sorted(kw)}")
        return kw["config"]
    try:
        return LogConfig.from_dict(kw, "log")
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix("log.")) from None


def open_stream(name_or_path: str | Path, **kw: Any) -> Stream:
    """A stream by name (see the module docstring); unknown names list the allowed ones.

    Errors name the key as in a run config (``data.path: required for 'criteo'``).
    """
    try:
        name, kwargs = stream_arguments(name_or_path, kw)
    except ConfigError as exc:
        raise ConfigError(f"data.{exc}") from None
    return _BUILDERS[name](**kwargs)
