"""``open_stream``: build a stream from a name (or ``name:path``) and keyword arguments.

    open_stream("synthetic", n_records=10_000, seed=1)       SyntheticConfig fields
    open_stream("criteo", path="train.txt")                  or "criteo:train.txt"
    open_stream("avazu", path="train.csv")                   or "avazu:train.csv"
    open_stream("movielens-1m", root="ml-1m")                or "movielens-1m:ml-1m"
    open_stream("movielens-100k", root="ml-100k")            or "movielens-100k:ml-100k"
    open_stream("csv", path="t.csv", schema={...})           or "csv:t.csv"; also Parquet

Configuration errors name their key as in a run config's ``data`` section
(``data.source``, ``data.path``). A path ending in ``.csv``, ``.tsv``, ``.parquet``
or ``.pq`` (optionally ``.gz``) without a name opens as ``csv``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kraken.data.avazu import AvazuStream
from kraken.data.base import Stream
from kraken.data.criteo import CriteoStream
from kraken.data.movielens import MovieLensStream
from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.data.tabular import TabularSchema, TabularStream
from kraken.errors import ConfigError

__all__ = ["STREAM_NAMES", "open_stream"]


def _synthetic(**kw: Any) -> SyntheticStream:
    if "config" in kw:
        if len(kw) > 1:
            raise ConfigError(f"data: pass either config or SyntheticConfig fields, "
                              f"got {sorted(kw)}")
        return SyntheticStream(kw["config"])
    try:
        return SyntheticStream(SyntheticConfig(**kw))
    except ConfigError as exc:
        raise ConfigError(f"data.{exc}") from None


def _movielens(kind: str) -> Callable[..., MovieLensStream]:
    def build(root: str | Path) -> MovieLensStream:
        return MovieLensStream(root, kind)
    return build


_BUILDERS: dict[str, tuple[Callable[..., Stream], str]] = {
    "synthetic": (_synthetic, ""),
    "criteo": (CriteoStream, "path"),
    "avazu": (AvazuStream, "path"),
    "movielens-1m": (_movielens("ml-1m"), "root"),
    "movielens-100k": (_movielens("ml-100k"), "root"),
    "csv": (TabularStream, "path"),
}
STREAM_NAMES = tuple(_BUILDERS)
_TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")


def _allowed_keys(name: str) -> list[str]:
    if name == "synthetic":
        return ["config", *inspect.signature(SyntheticConfig).parameters]
    return list(inspect.signature(_BUILDERS[name][0]).parameters)


def open_stream(name_or_path: str | Path, **kw: Any) -> Stream:
    """A stream by name (see the module docstring); unknown names list the allowed ones."""
    text = str(name_or_path)
    name, _, rest = text.partition(":")
    if name not in _BUILDERS:
        p = Path(text)
        suffixes = [s.lower() for s in p.suffixes if s.lower() != ".gz"]
        if suffixes and suffixes[-1] in _TABULAR_SUFFIXES:
            name, rest = "csv", text
        else:
            raise ConfigError(f"data.source: unknown stream {text!r}; allowed names: "
                              f"{list(STREAM_NAMES)} (optionally as 'name:path'), or a path "
                              f"ending in {list(_TABULAR_SUFFIXES)}")
    build, location = _BUILDERS[name]
    if rest:
        if not location:
            raise ConfigError(f"data.source: {name!r} reads no file, got {text!r}")
        if location in kw:
            raise ConfigError(f"data.{location}: given twice, in {text!r} and as a keyword")
        kw[location] = rest
    extra = sorted(set(kw) - set(_allowed_keys(name)))
    if extra:
        raise ConfigError(f"data: unknown key(s) {extra} for {name!r}; "
                          f"allowed: {_allowed_keys(name)}")
    needed = [k for k, p in inspect.signature(build).parameters.items()
              if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD
              and k not in kw]
    if needed and name != "synthetic":
        raise ConfigError(f"data.{needed[0]}: required for {name!r}")
    if name == "csv" and isinstance(kw["schema"], Mapping):
        kw["schema"] = TabularSchema.from_dict(kw["schema"], path="data.schema")
    return build(**kw)
