"""Run configs: every example parses; errors name the key path before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kraken.errors import ConfigError
from kraken.train.config import build_run, load_config
from tests.conftest import DATA, ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert "emb" in cfg.tables and cfg.trainer.batch_size >= 1


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


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ('[data]\nsource = "synthetic"\n[model]\nname = "deepfn"\n',
     r"model\.name: expected one of \[.*'deepfm'"),
    ('[tables.emb]\ndim = 8\noptimizer = { type = "adam", lr = -1 }\n',
     r"tables\.emb\.optimizer\.lr: must be >"),
    ('[tables.emb]\ndim = 8\neviction = [{ type = "lru", high_watermark = 3 }]\n',
     r"tables\.emb\.eviction\[0\]\.high_watermark: must be <= 1"),
    ('[tables.emb]\ndim = 8\n[trainer]\nbatch_sise = 8\n',
     r"trainer: unknown key\(s\) \['batch_sise'\]; allowed: \[.*'batch_size'"),
    ('[trainer]\nbatch_size = "big"\n', r"trainer\.batch_size: expected an integer"),
    ('[tables.wide]\ndim = 1\n', r"tables\.emb: required"),
    ('[datas]\nx = 1\n', r"unknown section\(s\) \['datas'\]"),
    ('[data]\nsource = "synthetic"\n[embedding]\npool = "max"\n', r"embedding: unknown key"),
    ("[data\n", "not valid TOML"),
])
def test_config_errors_name_the_path(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_bad_data_source_is_reported_at_build(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, '[data]\nsource = "kafka"\n'))
    with pytest.raises(ConfigError, match=r"data\.source: unknown stream 'kafka'"):
        build_run(cfg)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config("/nonexistent/run.toml")


def test_wide_table_is_derived_for_wide_models(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, '[model]\nname = "fm"\n[tables.emb]\ndim = 8\n'))
    assert cfg.tables["wide"].dim == 1
    cfg = load_config(_write(tmp_path, '[model]\nname = "dcn_v2"\n[tables.emb]\ndim = 8\n'))
    assert "wide" not in cfg.tables
