"""What a shard serves from a run file: the same tables the trainer uses."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kraken.cli.ps import shard_tables
from kraken.config import Precision
from kraken.errors import ConfigError
from kraken.table import TableConfig
from kraken.train.config import RunConfig, WideLayout, load_config
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_shard_reads_the_trainers_tables(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    tables, ps = shard_tables(str(path))  # the model decides ("auto": as a new run)
    assert tables == cfg.ps_tables and ps == cfg.ps
    for pinned in (cfg.pinned(), cfg.pinned(cfg.pinned().ps_tables)):  # as kraken launch
        resolved = tmp_path / "run.json"
        resolved.write_text(json.dumps(pinned.to_dict()))
        assert shard_tables(str(resolved)) == (cfg.ps_tables, cfg.ps)  # the same answer


def test_a_shard_of_a_resumed_run_reads_the_checkpoints_layout(tmp_path: Path) -> None:
    """Pinned by a checkpoint of two tables in fp32 (written before "auto"), the resolved
    file lists both tables and the shard reads them without the model zoo."""
    cfg = load_config(ROOT / "examples" / "synthetic.toml")
    held = _two_fp32_tables(cfg)
    pinned = cfg.pinned(held)
    assert set(pinned.ps_tables) == {"emb", "wide"}
    resolved = tmp_path / "run.json"
    resolved.write_text(json.dumps(pinned.to_dict()))
    tables, _ = shard_tables(str(resolved))
    assert tables == held and all(t.precision is Precision.FP32 for t in tables.values())


def test_a_bad_table_names_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps({"tables": {"emb": {"dim": 0}, "wide": {"dim": 1}}}))
    with pytest.raises(ConfigError, match=r"run.json: tables.emb.dim: must be >= 1"):
        shard_tables(str(bad))


def test_a_shard_told_the_run_dir_pins_auto_by_its_checkpoint(tmp_path: Path) -> None:
    """``kraken ps --resume RUN_DIR``: a config with the defaults ("auto") serves the two
    fp32 tables of the run's checkpoint, as the trainer resuming it will hold them."""
    from kraken.train import Trainer
    from kraken.train.config import build_run

    doc = {"data": {"source": "synthetic", "n_records": 256, "n_fields": 2, "vocab": 50},
           "model": {"name": "fm"}, "tables": {"emb": {"dim": 4}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    old = load_config(path, {"model": {"wide": "table"}, "tables": {"emb": {
        "dim": 4, "precision": "fp32"}}})
    run = build_run(old)
    Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
            config=run.config.trainer, run_dir=tmp_path / "run").checkpoint()
    run.ps.close()
    assert shard_tables(str(path))[0] == load_config(path).ps_tables  # new: segment, fp16
    tables, _ = shard_tables(str(path), str(tmp_path / "run"))
    assert tables == run.config.ps_tables and set(tables) == {"emb", "wide"}
    assert all(t.precision is Precision.FP32 for t in tables.values())


def test_a_pinned_file_of_either_layout_is_read_without_torch(tmp_path: Path) -> None:
    """Shards of ``kraken launch`` start without importing the model zoo, whichever layout
    the trainer's config pinned (segment rows are widened by the table package)."""
    cfg = load_config(ROOT / "examples" / "synthetic.toml")
    files = []
    for i, pinned in enumerate((cfg.pinned(), cfg.pinned(_two_fp32_tables(cfg)))):
        files.append(tmp_path / f"run{i}.json")
        files[-1].write_text(json.dumps(pinned.to_dict()))
    code = ("import json, sys; from kraken.cli.ps import shard_tables; "
            "print(json.dumps([[[n, c.dim, c.precision.value] for n, c in "
            "sorted(shard_tables(f)[0].items())] for f in sys.argv[1:]] + "
            "['torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], check=True,
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert json.loads(out) == [[["emb", 17, "fp16"]],
                               [["emb", 16, "fp32"], ["wide", 1, "fp32"]], False]


def _two_fp32_tables(cfg: RunConfig) -> dict[str, TableConfig]:
    """The tables of a checkpoint written before "auto": emb and wide, fp32."""
    old = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, wide=WideLayout.TABLE))
    return {n: dataclasses.replace(t, precision=Precision.FP32)
            for n, t in old.pinned().ps_tables.items()}
