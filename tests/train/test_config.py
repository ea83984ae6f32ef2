"""Run configs from dicts and TOML: what the parser reads, fills in and refuses.

Every example parses and reads back exactly what its file says; sections left out
take the documented defaults; every error names the key's path before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from kraken.config import Precision
from kraken.errors import ConfigError, DataError
from kraken.optim import Adam, RowWiseAdaGrad
from kraken.table import Normal, TableConfig, Zeros
from kraken.table.init import Columns
from kraken.train.config import (
    DataConfig,
    EmbeddingConfig,
    ModelConfig,
    RunConfig,
    WideLayout,
    auto_precision,
    build_run,
    load_config,
)
from kraken.train.trainer import TrainerConfig
from tests.conftest import DATA, ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5, EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses_to_what_its_file_says(path: Path) -> None:
    doc = tomllib.loads(path.read_text())
    cfg = load_config(path)
    written = cfg.to_dict()
    # [log] is the data section of a run reading an event log (the `redis` source)
    data = doc["data"] if "data" in doc else {"source": "redis", **doc["log"]}
    assert written["data"] == data
    assert written["model"] == {"name": "deepfm", **doc.get("model", {})}
    for key, value in doc.get("trainer", {}).items():
        assert getattr(cfg.trainer, key) == value, key
    for name, table in doc["tables"].items():
        want = TableConfig.from_dict({k: v for k, v in table.items() if v != "auto"},
                                     f"tables.{name}")
        if table.get("precision", "auto") == "auto":  # resolved as for a new run
            want = dataclasses.replace(want, precision=auto_precision(want))
        assert cfg.tables[name] == want
    assert RunConfig.from_dict(written) == cfg  # to_dict is read back unchanged


def test_sections_left_out_take_their_defaults() -> None:
    cfg = RunConfig.from_dict({})
    assert cfg.data == DataConfig(source="synthetic")
    assert cfg.model == ModelConfig(name="deepfm")
    assert cfg.trainer == TrainerConfig()
    assert cfg.embedding == EmbeddingConfig()
    # "auto" precision: row-wise AdaGrad keeps one float per row, so fp16 weights
    assert cfg.tables["emb"] == TableConfig(dim=16, precision=Precision.FP16)
    assert cfg.auto_precision == ("emb",)
    # DeepFM has a first-order term: "auto" puts it in the emb rows of a new run
    assert cfg.model.wide is WideLayout.AUTO and cfg.wide is WideLayout.SEGMENT
    assert set(cfg.tables) == {"emb"} and cfg.ps_tables["emb"].dim == 17
    # with model.wide = "table" the wide table is derived from emb (and its precision)
    table = RunConfig.from_dict({"model": {"wide": "table"}})
    assert table.tables["wide"] == TableConfig(dim=1, initializer=Zeros(),
                                               precision=Precision.FP16)
    assert table.auto_precision == ("emb", "wide")


def test_sections_are_typed_and_lists_become_tuples() -> None:
    cfg = RunConfig.from_dict({
        "data": {"source": "synthetic", "n_records": 10, "vocab": 50},
        "model": {"name": "din", "sequence": "s", "target": "item", "hidden": [8, 4]},
        "embedding": {"pooling": "mean", "max_sequence": 3},
    })
    assert (cfg.data.source, dict(cfg.data.options)) == ("synthetic",
                                                         {"n_records": 10, "vocab": 50})
    assert (cfg.model.name, cfg.model.target) == ("din", "item")
    assert dict(cfg.model.params) == {"sequence": "s", "hidden": (8, 4)}
    assert cfg.embedding == EmbeddingConfig(pooling="mean", max_sequence=3, hash_buckets=None)
    assert "wide" not in cfg.tables  # DIN has no first-order term


def test_sections_hold_their_own_copies() -> None:
    doc = {"data": {"source": "synthetic", "n_records": 10}, "model": {"name": "nfm"}}
    cfg = RunConfig.from_dict(doc)
    doc["data"]["n_records"] = 99
    doc["model"]["hidden"] = [1]
    assert cfg.data.options == {"n_records": 10} and cfg.model.params == {}
    assert copy.deepcopy(cfg) == cfg and dataclasses.asdict(cfg)["model"]["name"] == "nfm"


def test_an_explicit_wide_table_is_kept() -> None:
    cfg = RunConfig.from_dict({"model": {"name": "fm"},
                               "tables": {"emb": {"dim": 8}, "wide": {"dim": 1, "capacity": 7}}})
    assert cfg.tables["wide"].capacity == 7
    cfg = RunConfig.from_dict({"model": {"name": "dcn_v2"}, "tables": {"emb": {"dim": 8}}})
    assert "wide" not in cfg.tables


def test_wide_segment_derives_rows_of_embedding_and_wide_weight() -> None:
    base = {"model": {"name": "deepfm"},
            "tables": {"emb": {"dim": 8, "optimizer": {"type": "rowwise_adagrad", "lr": 0.1},
                               "initializer": {"type": "normal", "std": 0.01},
                               "precision": "fp16"}}}
    table = RunConfig.from_dict({**base, "model": {"name": "deepfm", "wide": "table"}})
    assert table.model.wide is WideLayout.TABLE and table.wide is WideLayout.TABLE
    assert set(table.ps_tables) == {"emb", "wide"} and table.ps_tables == table.tables
    assert table.to_dict()["model"]["wide"] == "table"
    assert "wide" not in RunConfig.from_dict(base).to_dict()["model"]  # "auto" is not written

    seg = RunConfig.from_dict({**base, "model": {"name": "deepfm", "wide": "segment"}})
    assert seg.wide is WideLayout.SEGMENT and set(seg.tables) == {"emb"}
    assert seg.tables["emb"].dim == 8  # as configured: the model's D
    emb = seg.ps_tables["emb"]
    assert set(seg.ps_tables) == {"emb"} and emb.dim == 9
    assert emb.optimizer == RowWiseAdaGrad(lr=0.1, segments=(8, 1)) and emb.state_width == 2
    assert emb.initializer == Columns(widths=(8, 1), parts=(Normal(std=0.01), Zeros()))
    assert emb.precision is Precision.FP16
    back = RunConfig.from_dict(json.loads(json.dumps(seg.to_dict())))
    assert back == seg and back.ps_tables == seg.ps_tables  # the derivation is not repeated
    assert seg.to_dict()["model"]["wide"] == "segment"

    # per-element optimizers need no segments; given segments get the wide one appended
    adam = RunConfig.from_dict({"model": {"name": "lr", "wide": "segment"},
                                "tables": {"emb": {"dim": 4, "optimizer": {"type": "adam"}}}})
    assert adam.ps_tables["emb"].optimizer == Adam() and adam.ps_tables["emb"].dim == 5
    own = RunConfig.from_dict({
        "model": {"name": "fm", "wide": "segment"},
        "tables": {"emb": {"dim": 4, "optimizer": {"type": "radagrad", "segments": [3, 1]}}}})
    assert own.ps_tables["emb"].optimizer.segments == (3, 1, 1)
    # a model without first-order weights: "table" (the default) is accepted and ignored
    assert RunConfig.from_dict({"model": {"name": "dlrm", "wide": "table"}}).wide is None


def test_build_run_with_wide_segment_reads_one_table() -> None:
    cfg = RunConfig.from_dict({"data": {"source": "synthetic", "n_records": 10, "n_fields": 3},
                               "model": {"name": "wide_deep", "wide": "segment",
                                         "hidden": [4]},
                               "tables": {"emb": {"dim": 4}}})
    run = build_run(cfg)
    assert set(run.ps.tables) == {"emb"} and run.ps.tables["emb"].dim == 5
    assert run.embedding.wide_column and run.embedding.wide_table is None
    assert run.embedding.dim == run.model.shape.dim == 4
    batch = next(run.stream.batches(10))
    inputs = run.embedding(run.embedding.pull(run.embedding.prepare(batch), train=False))
    assert inputs.emb.shape == (10, 3, 4) and inputs.wide.shape == (10, 3)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ('[model]\nname = "deepfn"\n',
     r"model\.name: unknown model 'deepfn'; models are \[.*'deepfm'"),
    ('[model]\nname = "deepfm"\nhiden = [8]\n',
     r"model\.hiden: unknown hyperparameter\(s\) \['hiden'\] for 'deepfm'; "
     r"allowed: \[.*'hidden'"),
    ('[model]\nname = "din"\ntarget = 3\n', r"model\.target: expected a field name"),
    ('[model]\nname = 7\n', r"model\.name: unknown model 7"),
    ("[data]\nn_records = 5\n", r"data\.source: missing \(required\)"),
    ('[data]\nsource = "kafka"\n', r"data\.source: unknown stream 'kafka'; allowed names"),
    ('[data]\nsource = "criteo"\n', r"data\.path: required for 'criteo'"),
    ('[data]\nsource = "criteo"\nroot = "x"\n',
     r"data\.root: unknown key\(s\) \['root'\] for 'criteo'; allowed: \['path'"),
    ('[data]\nsource = "synthetic"\nn_records = -1\n', r"data\.n_records: must be >= 0"),
    ('[data]\nsource = "synthetic:x.txt"\n', r"data\.source: 'synthetic' reads no file"),
    ('[data]\nsource = "csv"\npath = "t.csv"\n[data.schema]\ncategorical = ["a"]\n',
     r"data\.schema\.label: missing \(required\)"),
    ('[data]\nsource = "csv"\npath = "t.csv"\n[data.schema]\nlabel = "y"\ndense = ["y"]\n',
     r"data\.schema\.dense\[0\]: column 'y' is already used as label"),
    ('[tables.emb]\ndim = 8\noptimizer = { type = "adam", lr = -1 }\n',
     r"tables\.emb\.optimizer\.lr: must be >"),
    ('[tables.emb]\ndim = 8\neviction = [{ type = "lru", high_watermark = 3 }]\n',
     r"tables\.emb\.eviction\[0\]\.high_watermark: must be <= 1"),
    ('[tables.emb]\ndim = 8\n[trainer]\nbatch_sise = 8\n',
     r"trainer: unknown key\(s\) \['batch_sise'\]; allowed: \[.*'batch_size'"),
    ('[trainer]\nbatch_size = "big"\n', r"trainer\.batch_size: expected an integer"),
    ('[tables.wide]\ndim = 1\n', r"tables\.emb: required"),
    ('[datas]\nx = 1\n', r"unknown section\(s\) \['datas'\]"),
    ('[embedding]\npool = "max"\n',
     r"embedding: unknown key\(s\) \['pool'\]; allowed: \['hash_buckets', 'max_sequence'"),
    ('[embedding]\nmax_sequence = 0\n', r"embedding\.max_sequence: must be >= 1, got 0"),
    ('[model]\nname = "deepfm"\nwide = "column"\n',
     r"model\.wide: expected one of \['auto', 'table', 'segment'\], got 'column'"),
    ('[model]\nname = "dcn_v2"\nwide = "segment"\n',
     r"model\.wide: 'segment' stores first-order weights in the embedding row, and "
     r"'dcn_v2' has none \(models with first-order weights: \['deepfm', 'fm', 'lr', 'nfm', "
     r"'wide_deep'\]\)"),
    ('[model]\nname = "fm"\nwide = "segment"\n[tables.emb]\ndim = 4\n[tables.wide]\ndim = 1\n',
     r"tables\.wide: model\.wide = 'segment' keeps the first-order weights in the rows of "
     r"tables\.emb; remove \[tables\.wide\] or set model\.wide = 'table'"),
    ('[model]\nname = "fm"\nwide = "segment"\n[tables.emb]\ndim = 4\n'
     'optimizer = { type = "rowwise_adagrad", segments = [2, 1] }\n',
     r"tables\.emb\.optimizer\.segments: widths \[2, 1\] sum to 3, the row has dim 4"),
    ('[embedding]\nhash_buckets = 1.5\n', r"embedding\.hash_buckets: expected an integer"),
    ('data = 3\n', r"data: expected a table, got int"),
    ("[data\n", "not valid TOML"),
])
def test_config_errors_name_the_path(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_section_configs_raise_relative_paths_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"^name: unknown model 'x'"):
        ModelConfig(name="x")
    with pytest.raises(ConfigError, match=r"^hidden: unknown hyperparameter"):
        ModelConfig(name="lr", params={"hidden": (8,)})
    with pytest.raises(ConfigError, match=r"^path: required for 'avazu'"):
        DataConfig(source="avazu")
    with pytest.raises(ConfigError, match=r"^max_sequence: must be >= 1"):
        EmbeddingConfig(max_sequence=0)
    with pytest.raises(ConfigError, match=r"^model: expected a ModelConfig, got dict"):
        RunConfig(data=DataConfig("synthetic"), model={"name": "lr"},  # type: ignore[arg-type]
                  tables={"emb": TableConfig(dim=4)}, trainer=TrainerConfig())


def test_overrides_are_merged_per_section(tmp_path: Path) -> None:
    path = _write(tmp_path, '[data]\nsource = "synthetic"\nn_records = 9\n'
                            '[trainer]\nbatch_size = 8\nwindow = 5\n')
    cfg = load_config(path, {"trainer": {"max_samples": 100}, "data": {"seed": 3}})
    assert (cfg.trainer.batch_size, cfg.trainer.window, cfg.trainer.max_samples) == (8, 5, 100)
    assert dict(cfg.data.options) == {"n_records": 9, "seed": 3}


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/run.toml")


def test_a_missing_data_file_is_reported_when_the_stream_opens(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, f'[data]\nsource = "criteo:{tmp_path}/none.txt"\n'))
    assert cfg.data.source == f"criteo:{tmp_path}/none.txt" and not cfg.data.options
    with pytest.raises(DataError, match="none.txt"):
        build_run(cfg)


def test_target_must_be_a_field_of_the_stream(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, '[data]\nsource = "synthetic"\nn_records = 10\n'
                                       '[model]\nname = "din"\ntarget = "nope"\n'))
    with pytest.raises(ConfigError, match=r"model\.target: 'nope' is not a field"):
        build_run(cfg)


def test_build_run_uses_the_typed_sections(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, '[data]\nsource = "synthetic"\nn_records = 10\n'
                                       'n_fields = 3\n[model]\nname = "nfm"\nhidden = [4]\n'
                                       'wide = "table"\n[tables.emb]\ndim = 4\n'
                                       '[embedding]\nhash_buckets = 1000\n'))
    run = build_run(cfg)
    assert len(run.stream.schema.fields) == 3
    assert run.model.shape.n_fields == 3 and run.model.shape.dim == 4
    assert run.embedding.hash_buckets == 1000 and run.embedding.wide_table == "wide"
    assert set(run.ps.tables) == {"emb", "wide"}


@pytest.mark.parametrize("name", ["criteo.toml", "avazu.toml", "movielens-100k-din.toml"])
def test_examples_on_real_data_train(name: str, tmp_path: Path, monkeypatch) -> None:
    if not DATA.is_dir():
        pytest.skip("shared data folder absent")
    monkeypatch.chdir(ROOT)
    from kraken.train import Trainer

    cfg = load_config(ROOT / "examples" / name, {"trainer": {"max_samples": 2000}})
    run = build_run(cfg)
    tr = Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
                 config=cfg.trainer, run_dir=tmp_path)
    s = tr.run()
    assert s.samples >= 2000 and 0.0 < s.metrics["logloss"] < 1.5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_json_run_file_reads_like_its_toml(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    as_json = tmp_path / f"{path.stem}.json"
    as_json.write_text(json.dumps(cfg.to_dict()))
    assert load_config(as_json) == cfg
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_config(bad)
