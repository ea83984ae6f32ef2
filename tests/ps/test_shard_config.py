"""What a shard serves from a run file: the same tables the trainer uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kraken.cli.ps import shard_tables
from kraken.errors import ConfigError
from kraken.train.config import load_config
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_shard_reads_the_trainers_tables(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    tables, ps = shard_tables(str(path))  # the model decides (wide table derived)
    assert tables == cfg.tables and ps == cfg.ps
    resolved = tmp_path / "run.json"
    resolved.write_text(json.dumps(cfg.to_dict()))
    assert shard_tables(str(resolved)) == (cfg.tables, cfg.ps)  # light path, same answer


def test_a_bad_table_names_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"tables": {"emb": {"dim": 0}, "wide": {"dim": 1}}}))
    with pytest.raises(ConfigError, match=r"run.json: tables.emb.dim: must be >= 1"):
        shard_tables(str(bad))
