"""A whole run from one TOML file: data, tables, model, trainer.

Example (``examples/synthetic.toml``)::

    [data]
    source = "synthetic"          # synthetic | criteo | avazu | movielens-1m | movielens-100k | csv
    n_records = 500000            # further keys go to the source

    [model]
    name = "deepfm"               # lr | fm | wide_deep | deepfm | dcn_v2 | dlrm | nfm | din
    hidden = [256, 128]
    wide = "auto"                 # first-order weights: "auto" (default) | "table" | "segment"

    [tables.emb]                  # all sparse fields share this table
    dim = 16
    capacity = 2000000
    optimizer = { type = "rowwise_adagrad", lr = 0.05 }
    precision = "auto"            # "auto" (default) | "fp32" | "fp16" | "bf16"
    admission = { type = "count_min", threshold = 2 }
    eviction = [{ type = "lru", high_watermark = 0.95, low_watermark = 0.85 }]

    [trainer]
    batch_size = 4096
    dense_lr = 0.001

Each section becomes a frozen dataclass built through :func:`kraken.config.build_dataclass`
(:class:`DataConfig`, :class:`ModelConfig`, ``TableConfig``, ``TrainerConfig``,
:class:`EmbeddingConfig`). Every error names the key's path
(``tables.emb.optimizer.lr: must be > 0, got -1``) and, for choices, the allowed values;
nothing runs before the whole file is valid, except what needs the data itself (a missing
file, hyperparameters that depend on the data's shape), reported by :func:`build_run`.

Two settings default to ``"auto"``, resolved once per run (:meth:`RunConfig.pinned`):

- ``model.wide``: a new run of a model with first-order weights keeps them in the
  embedding rows (``"segment"``); a run resumed from a checkpoint keeps the layout the
  checkpoint holds (a ``wide`` table: ``"table"``, else ``"segment"``).
- a table's ``precision``: a new table stores its weights in :data:`AUTO_ROW_PRECISION`
  (fp16, stochastic rounding) when its optimizer keeps O(1) state per row (the row-wise
  ones, which have ``segments``), fp32 otherwise; a resumed table keeps the precision its
  checkpoint holds (checkpoints written before this default hold fp32 and resume so).

An explicit ``"table"`` / ``"segment"`` or precision is honoured; one that contradicts the
checkpoint being resumed raises :class:`~kraken.errors.CheckpointMismatchError` naming both.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kraken.checkpoint import CheckpointStore
from kraken.config import Precision, build_dataclass, check_enum, check_int, read_config_file
from kraken.data import open_stream
from kraken.data.base import Stream
from kraken.data.registry import stream_arguments
from kraken.errors import CheckpointMismatchError, ConfigError
from kraken.nn.embedding import EmbeddingLayer
from kraken.nn.models import ModelShape, RankingModel, build_model
from kraken.nn.models.base import MODELS, check_hyperparameters, model_class
from kraken.ps import ParameterServer, PSConfig, build_ps
from kraken.table import TableConfig, Zeros
from kraken.table.segments import with_wide_column
from kraken.train.randomness import seeded_scope
from kraken.train.trainer import TrainerConfig

__all__ = ["AUTO", "AUTO_ROW_PRECISION", "DataConfig", "EmbeddingConfig", "ModelConfig", "Run",
           "RunConfig", "WideLayout", "auto_precision", "build_run", "load_config"]

_SECTIONS = ("data", "log", "model", "tables", "trainer", "embedding", "ps")

AUTO = "auto"
"""The value of a setting resolved per run (``model.wide``, a table's ``precision``)."""

AUTO_ROW_PRECISION = Precision.FP16
"""What ``precision = "auto"`` gives a new table whose optimizer keeps O(1) state per row.

fp16 with stochastic rounding: on MovieLens-1M, Criteo and Avazu (DeepFM, Wide&Deep, dims 4
and 16) its progressive AUC is within 0.0001 of fp32 rows (BENCHMARKS.md). Set it to
``Precision.FP32`` to make fp32 the default everywhere again."""


def _own_copy(path: str, value: Any) -> dict[str, Any]:
    """A copy of a mapping (the caller's dict may change later); lists become tuples.

    A plain dict, not a read-only view, so that ``dataclasses.asdict`` and
    ``copy.deepcopy`` keep working on the config; nothing in Kraken mutates it.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
    return {k: _tuples(v) for k, v in value.items()}


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` section: a stream ``source`` and the keys that go to it.

    ``source`` is a name of :func:`kraken.data.open_stream` (``"criteo"``, or
    ``"criteo:train.txt"``) or a path to a CSV/Parquet file; ``options`` are the
    stream's keywords (``path``, ``root``, ``schema``, ``SyntheticConfig`` fields), given
    in the file beside ``source``. Validated on construction without opening anything:
    unknown names, unknown and missing keys and invalid values raise
    :class:`ConfigError` naming the key (``data.path: required for 'criteo'``); a
    missing file is reported when the stream opens.
    """

    source: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise ConfigError(f"source: expected a stream name or a path, got "
                              f"{type(self.source).__name__} {self.source!r}")
        object.__setattr__(self, "options", _own_copy("options", self.options))
        stream_arguments(self.source, self.options)

    @classmethod
    def from_dict(cls, d: Any, path: str = "data") -> DataConfig:
        """From the section as written: ``source`` plus the stream's keys, side by side."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(d).__name__}")
        own = {"source": d["source"]} if "source" in d else {}
        rest = {k: v for k, v in d.items() if k != "source"}
        return build_dataclass(cls, {**own, "options": rest}, path)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        """The section as written (inverse of :meth:`from_dict`), JSON-able."""
        return {"source": self.source, **_jsonable(self.options)}

    def open(self) -> Stream:
        """Open the stream (this is where a missing file is reported)."""
        return open_stream(self.source, **self.options)


class WideLayout(enum.Enum):
    """Where a model's first-order ("wide") weight of each feature lives.

    ``TABLE``: a dim-1 table ``wide`` of its own (a second index, key and metadata per
    feature); ``SEGMENT``: the last column of the feature's ``emb`` row, ``[embedding (D) |
    wide (1)]``, one index, key and metadata for both (row-wise optimizers keep one
    accumulator per segment, so the steps are those of two tables). ``AUTO``: ``SEGMENT``
    for a new run, what the checkpoint holds for a resumed one (see
    :meth:`RunConfig.pinned`); with a ``[tables.wide]`` section given, ``TABLE``.
    """

    AUTO = "auto"
    TABLE = "table"
    SEGMENT = "segment"


def auto_precision(table: TableConfig) -> Precision:
    """The precision ``"auto"`` gives a new table: :data:`AUTO_ROW_PRECISION` when its
    optimizer keeps O(1) state per row (a row-wise optimizer: one accumulator per segment,
    the optimizers with ``segments``), fp32 when the state grows with the row (Adam,
    AdaGrad, FTRL) or there is none (SGD)."""
    return AUTO_ROW_PRECISION if _row_wise(table.optimizer) else Precision.FP32


def _row_wise(opt: Any) -> bool:
    """Whether a sparse optimizer keeps one accumulator per row segment (it has ``segments``)."""
    return "segments" in {f.name for f in dataclasses.fields(opt)}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` section: a registered model ``name``, its hyperparameters.

    ``params`` are the model's keyword hyperparameters (lists become tuples), written
    beside ``name`` in the file; ``target`` names the sparse field that is the
    candidate item (DIN's query), the first field if ``None``; ``wide``, a
    :class:`WideLayout` (or its name), where a model with first-order weights keeps them
    (``"auto"`` by default: segment rows for a new run, the checkpoint's layout for a
    resumed one; ``"segment"`` only for such models). Validated on construction: an unknown
    name (``model.name: unknown model 'x'; models are [...]``) or a key the model
    does not take (``model.hiden: unknown hyperparameter(s) ...``). Values are
    checked when the model is built (:func:`build_run`), since some depend on the
    data's shape.
    """

    name: str = "deepfm"
    target: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    wide: WideLayout = WideLayout.AUTO

    def __post_init__(self) -> None:
        cls = model_class(self.name)
        object.__setattr__(self, "wide", check_enum("wide", self.wide, WideLayout))
        if self.wide is WideLayout.SEGMENT and not cls.needs_wide:
            raise ConfigError(f"wide: 'segment' stores first-order weights in the embedding "
                              f"row, and {self.name!r} has none (models with first-order "
                              f"weights: {sorted(n for n, c in MODELS.items() if c.needs_wide)})")
        if self.target is not None and (not isinstance(self.target, str) or not self.target):
            raise ConfigError(f"target: expected a field name, got {self.target!r}")
        object.__setattr__(self, "params", _own_copy("params", self.params))
        check_hyperparameters(self.name, self.params)

    @property
    def needs_wide(self) -> bool:
        """Whether the model reads a dim-1 first-order table (``tables.wide``)."""
        return model_class(self.name).needs_wide

    @classmethod
    def from_dict(cls, d: Any, path: str = "model") -> ModelConfig:
        """From the section as written: ``name``, ``target`` and hyperparameters side by side."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{path}: expected a table, got {type(d).__name__}")
        own = {k: d[k] for k in ("name", "target", "wide") if k in d}
        params = {k: v for k, v in d.items() if k not in own}
        return build_dataclass(cls, {**own, "params": params}, path)  # type: ignore[no-any-return]

    def to_dict(self) -> dict[str, Any]:
        """The section as written (inverse of :meth:`from_dict`), JSON-able."""
        target = {} if self.target is None else {"target": self.target}
        wide = {} if self.wide is WideLayout.AUTO else {"wide": self.wide.value}
        return {"name": self.name, **target, **wide, **_jsonable(self.params)}


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """The ``[embedding]`` section: how the embedding layer pools and looks up.

    ``pooling`` of multi-valued fields (checked by the layer); ``max_sequence``: the
    last this-many values of a sequence are kept (>= 1); ``hash_buckets``: if set
    (>= 1), the hashing trick (see :class:`~kraken.nn.embedding.EmbeddingLayer`).
    """

    pooling: str = "sum"
    max_sequence: int = 50
    hash_buckets: int | None = None

    def __post_init__(self) -> None:
        check_int("max_sequence", self.max_sequence, lo=1)
        if self.hash_buckets is not None:
            check_int("hash_buckets", self.hash_buckets, lo=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A validated run description (see the module docstring).

    Sections left out of a file take their defaults: ``data`` the synthetic stream,
    ``model`` DeepFM, ``tables`` one table ``emb`` of dim 16, ``trainer`` and
    ``embedding`` their dataclass defaults. A model that ``needs_wide`` keeps its
    first-order weights where :attr:`wide` says: with ``"table"`` it gets a ``wide``
    table derived from ``emb`` (dim 1, zeros, ``emb``'s precision) unless one is given;
    with ``"segment"`` no such table, and :attr:`ps_tables` widens ``emb`` instead.
    ``tables`` are the tables as configured (``emb`` of the model's dim ``D``),
    :attr:`ps_tables` the tables as the parameter server holds them.

    ``auto_precision`` names the tables whose precision is ``"auto"`` (:meth:`from_dict`
    puts there every table section that sets none, and a derived ``wide`` table follows
    ``emb``); their ``precision`` in :attr:`tables` is the one a new run gives them
    (:func:`auto_precision`). A ``RunConfig`` built from ``TableConfig`` objects takes
    their precision as given unless named there. Every ``"auto"`` is resolved as for a new
    run on construction; :meth:`pinned` resolves them against a checkpoint instead.
    """

    data: DataConfig
    model: ModelConfig
    tables: dict[str, TableConfig]
    trainer: TrainerConfig
    embedding: EmbeddingConfig = dataclasses.field(default_factory=EmbeddingConfig)
    ps: PSConfig = dataclasses.field(default_factory=PSConfig)
    auto_precision: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, cls in (("data", DataConfig), ("model", ModelConfig),
                          ("trainer", TrainerConfig), ("embedding", EmbeddingConfig),
                          ("ps", PSConfig)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"{name}: expected a {cls.__name__}, got "
                                  f"{type(getattr(self, name)).__name__}")
        if not isinstance(self.tables, Mapping) or "emb" not in self.tables:
            raise ConfigError("tables.emb: required (the table of every sparse field)")
        for name, t in self.tables.items():
            if not isinstance(t, TableConfig):
                raise ConfigError(f"tables.{name}: expected a TableConfig, got "
                                  f"{type(t).__name__}")
        auto = self.auto_precision
        if isinstance(auto, str) or not all(isinstance(n, str) for n in auto):
            raise ConfigError(f"auto_precision: expected a list of table names, got {auto!r}")
        unknown = sorted(set(auto) - set(self.tables) - {"wide"})
        if unknown:
            raise ConfigError(f"auto_precision: no table(s) {unknown}; tables are "
                              f"{sorted(self.tables)}")
        tables = {n: dataclasses.replace(t, precision=auto_precision(t)) if n in auto else t
                  for n, t in self.tables.items()}
        wide = self._layout(given_wide="wide" in self.tables)
        if wide is WideLayout.SEGMENT and "wide" in tables:
            raise ConfigError("tables.wide: model.wide = 'segment' keeps the first-order "
                              "weights in the rows of tables.emb; remove [tables.wide] or "
                              "set model.wide = 'table'")
        auto_names = set(auto) & set(tables)
        if wide is WideLayout.TABLE and "wide" not in tables:
            emb = tables["emb"]
            tables["wide"] = dataclasses.replace(emb, dim=1, initializer=Zeros(),
                                                 precision=emb.precision)
            if "emb" in auto_names:  # a derived wide table follows emb's "auto"
                auto_names.add("wide")
        object.__setattr__(self, "tables", tables)
        object.__setattr__(self, "auto_precision", tuple(sorted(auto_names)))
        object.__setattr__(self, "_wide", wide)
        ps_tables = dict(tables)
        if wide is WideLayout.SEGMENT:
            ps_tables["emb"] = with_wide_column(tables["emb"])
        object.__setattr__(self, "_ps_tables", ps_tables)

    def _layout(self, given_wide: bool) -> WideLayout | None:
        """Where this run keeps first-order weights as a new run: ``model.wide``, with
        ``"auto"`` resolved (``"table"`` if a wide table is given, else ``"segment"``)."""
        if not self.model.needs_wide:
            return None
        if self.model.wide is WideLayout.AUTO:
            return WideLayout.TABLE if given_wide else WideLayout.SEGMENT
        return self.model.wide

    @property
    def ps_tables(self) -> dict[str, TableConfig]:
        """The tables as the parameter server holds them: :attr:`tables`, except that with
        segment rows (:attr:`wide` ``SEGMENT``) the rows of ``emb`` carry the wide column
        (dim ``D + 1``, see :func:`~kraken.table.segments.with_wide_column`)."""
        return dict(self._ps_tables)  # type: ignore[attr-defined]

    @property
    def wide(self) -> WideLayout | None:
        """Where the model's first-order weights live (``TABLE`` or ``SEGMENT``, never
        ``AUTO``: as a new run resolves it), or None if it has none."""
        return self._wide  # type: ignore[attr-defined,no-any-return]

    def pinned(self, held: Mapping[str, TableConfig] | None = None) -> RunConfig:
        """This config with every ``"auto"`` setting made explicit, resolved once per run.

        ``held``: the tables a checkpoint to be resumed holds, as its parameter server held
        them (:meth:`~kraken.checkpoint.CheckpointStore.held_tables`); None for a new run.
        ``model.wide = "auto"`` becomes the checkpoint's layout (``"table"`` if it holds a
        ``wide`` table, else ``"segment"``) or, for a new run, :attr:`wide`; an ``"auto"``
        precision becomes the precision of the checkpoint's table of that name, or
        :func:`auto_precision` for a table the checkpoint does not hold.

        Raises :class:`~kraken.errors.CheckpointMismatchError`, naming both, when an
        explicit setting contradicts the checkpoint: ``model.wide`` (or a given
        ``[tables.wide]``) against the checkpoint's layout, or a table's precision
        against the precision of the checkpoint's table.
        """
        layout = self.wide
        tables = dict(self.tables)
        if layout is not None and held is not None:
            theirs = WideLayout.TABLE if "wide" in held else WideLayout.SEGMENT
            auto = self.model.wide is WideLayout.AUTO
            if theirs is not layout and (not auto or "wide" in tables):
                why = ("model.wide = 'auto' with a [tables.wide] section" if auto
                       else f"model.wide = {layout.value!r}")
                raise CheckpointMismatchError(
                    f"{why} keeps the first-order weights {_WHERE[layout]}, and the "
                    f"checkpoint holds them {_WHERE[theirs]} (tables {sorted(held)}); set "
                    f"model.wide = {theirs.value!r} or 'auto' to resume it, or start a new "
                    "run directory")
            if theirs is WideLayout.TABLE and "wide" not in tables:  # derived, as before
                emb = tables["emb"]
                tables["wide"] = dataclasses.replace(emb, dim=1, initializer=Zeros())
            layout = theirs
        auto_names = set(self.auto_precision) | (
            {"wide"} if "emb" in self.auto_precision and "wide" not in self.tables else set())
        for name, t in tables.items():
            mine = held.get(name) if held is not None else None
            if name in auto_names:
                precision = mine.precision if mine is not None else auto_precision(t)
                tables[name] = dataclasses.replace(t, precision=precision)
            elif mine is not None and mine.precision is not t.precision:
                raise CheckpointMismatchError(
                    f"tables.{name}.precision: {t.precision.value!r} in this config, "
                    f"{mine.precision.value!r} in the checkpoint; set it to "
                    f"{mine.precision.value!r} or 'auto' to resume it")
        model = self.model if layout is None else dataclasses.replace(self.model, wide=layout)
        return dataclasses.replace(self, model=model, tables=tables, auto_precision=())

    @classmethod
    def from_dict(cls, doc: Any) -> RunConfig:
        """From a parsed file (a dict of sections); every error names its key's path.

        A table section without ``precision`` (or with ``precision = "auto"``) is named in
        :attr:`auto_precision`."""
        if not isinstance(doc, Mapping):
            raise ConfigError(f"expected a table of sections, got {type(doc).__name__}")
        extra = sorted(set(doc) - set(_SECTIONS))
        if extra:
            raise ConfigError(f"unknown section(s) {extra}; allowed: {sorted(_SECTIONS)}")
        raw_tables = doc.get("tables", {"emb": {"dim": 16}})
        if not isinstance(raw_tables, Mapping) or "emb" not in raw_tables:
            raise ConfigError("tables.emb: required (the table of every sparse field)")
        if "log" in doc and "data" in doc:
            raise ConfigError("log: a run reads either [data] or an event log [log], not both")
        if "log" in doc and not isinstance(doc["log"], Mapping):
            raise ConfigError(f"log: expected a table, got {type(doc['log']).__name__}")
        data = (DataConfig.from_dict({"source": "redis", **doc["log"]}, "log") if "log" in doc
                else DataConfig.from_dict(doc.get("data", {"source": "synthetic"})))
        tables, auto = {}, []
        for n, t in raw_tables.items():
            if isinstance(t, Mapping) and t.get("precision", AUTO) == AUTO:
                t = {k: v for k, v in t.items() if k != "precision"}
                auto.append(n)
            tables[n] = TableConfig.from_dict(t, f"tables.{n}")
        return cls(
            data=data,
            model=ModelConfig.from_dict(doc.get("model", {})),
            tables=tables,
            trainer=build_dataclass(TrainerConfig, doc.get("trainer", {}), "trainer"),
            embedding=build_dataclass(EmbeddingConfig, doc.get("embedding", {}), "embedding"),
            ps=PSConfig.from_dict(doc.get("ps", {})),
            auto_precision=tuple(auto))

    def to_dict(self) -> dict[str, Any]:
        """The sections as a file would write them (``from_dict`` reads it back), JSON-able;
        a table of :attr:`auto_precision` is written with ``precision = "auto"``."""
        tables = {n: {**t.to_dict(), **({"precision": AUTO} if n in self.auto_precision
                                        else {})}
                  for n, t in self.tables.items()}
        return {"data": self.data.to_dict(), "model": self.model.to_dict(), "tables": tables,
                "trainer": _jsonable(dataclasses.asdict(self.trainer)),
                "embedding": self.embedding.to_dict(), "ps": _jsonable(dataclasses.asdict(self.ps))}


_WHERE = {WideLayout.TABLE: "in a table of their own (tables.wide)",
          WideLayout.SEGMENT: "in the rows of tables.emb (segment rows)"}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _jsonable(dataclasses.asdict(v))
    if isinstance(v, enum.Enum):
        return v.value
    return v


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Parse and validate a run file, TOML (``.toml``) or JSON (``.json``, e.g. written
    by a tool from :meth:`RunConfig.to_dict`); ``overrides`` are merged per section first."""
    p = Path(path)
    doc = read_config_file(p)
    for section, values in (overrides or {}).items():
        doc.setdefault(section, {}).update(values)
    try:
        return RunConfig.from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


@dataclasses.dataclass
class Run:
    """Everything a trainer needs, built from a :class:`RunConfig`."""

    config: RunConfig
    stream: Stream
    ps: ParameterServer
    embedding: EmbeddingLayer
    model: RankingModel


def build_run(config: RunConfig, shards: list[str] | None = None, *,
              checkpoint: str | Path | None = None) -> Run:
    """Open the stream, reach the tables, build the model (seeded by ``trainer.seed``).

    The tables are in this process (``[ps] mode = "local"``) or on the shards the config
    names; ``shards`` (``host:port`` each) overrides those addresses. ``checkpoint``: the
    checkpoint directory the run will resume from (``Trainer.resume``), if any: its
    ``"auto"`` settings then keep what that checkpoint holds (:meth:`RunConfig.pinned`).
    ``Run.config`` is the pinned config.
    """
    held = CheckpointStore.held_tables(Path(checkpoint)) if checkpoint is not None else None
    config = config.pinned(held)
    stream = config.data.open()
    schema = stream.schema
    ps = build_ps(config.ps_tables, config.ps, shards)
    target = config.model.target
    names = schema.fields + schema.jagged
    if target is not None and target not in names:
        raise ConfigError(f"model.target: {target!r} is not a field; fields: {list(names)}")
    shape = ModelShape(n_fields=len(names), dim=config.tables["emb"].dim,
                       n_dense=len(schema.dense), sequence_fields=schema.jagged,
                       target_field=names.index(target) if target else 0)
    with seeded_scope(config.trainer.seed):
        model = build_model(config.model.name, shape, **config.model.params)
    wide = config.wide
    embedding = EmbeddingLayer(ps, schema, table="emb",
                               wide_table="wide" if wide is WideLayout.TABLE else None,
                               wide_column=wide is WideLayout.SEGMENT,
                               sequence_fields=model.sequence_fields,
                               **dataclasses.asdict(config.embedding))
    return Run(config=config, stream=stream, ps=ps, embedding=embedding, model=model)
