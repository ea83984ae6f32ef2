"""``model.wide`` and table ``precision`` default to "auto": what a new run gets, what a
resumed one keeps (its checkpoint's layout and precision), and the errors when an explicit
setting contradicts the checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kraken.checkpoint import CheckpointStore
from kraken.cli.train import train_and_report
from kraken.config import Precision
from kraken.errors import CheckpointMismatchError
from kraken.ps import LocalPS
from kraken.table import TableConfig
from kraken.train import Trainer
from kraken.train.config import AUTO_ROW_PRECISION, RunConfig, WideLayout, build_run

DATA = {"source": "synthetic", "n_records": 1024, "n_fields": 3, "n_dense": 2, "vocab": 200,
        "seed": 1}
TRAINER = {"batch_size": 256, "seed": 0, "log_every_s": 3600.0}


def _config(model: dict[str, Any] | None = None, emb: dict[str, Any] | None = None,
            **tables: dict[str, Any]) -> RunConfig:
    return RunConfig.from_dict({
        "data": DATA, "model": {"name": "deepfm", "hidden": [8], **(model or {})},
        "tables": {"emb": {"dim": 4, **(emb or {})}, **tables}, "trainer": TRAINER})


def _held(config: RunConfig) -> dict[str, TableConfig]:
    """The tables a checkpoint of a run of ``config`` holds."""
    return config.pinned().ps_tables


def test_a_new_run_gets_segment_rows_and_16_bit_row_wise_weights() -> None:
    assert AUTO_ROW_PRECISION is Precision.FP16
    pinned = _config().pinned()
    assert pinned.model.wide is WideLayout.SEGMENT and pinned.auto_precision == ()
    assert set(pinned.ps_tables) == {"emb"} and pinned.ps_tables["emb"].dim == 5
    assert pinned.tables["emb"].precision is Precision.FP16
    assert pinned == _config({"wide": "segment"}, {"precision": "fp16"})
    # optimizers whose state grows with the row keep fp32; so does SGD (no row-wise state)
    for opt in ("adam", "adagrad", "ftrl", "sgd"):
        cfg = _config(emb={"optimizer": {"type": opt}}).pinned()
        assert cfg.tables["emb"].precision is Precision.FP32, opt
    radagrad = _config(emb={"optimizer": {"type": "radagrad"}}).pinned()
    assert radagrad.tables["emb"].precision is Precision.FP16
    # explicit settings are honoured; a [tables.wide] section under "auto" means "table"
    assert _config(emb={"precision": "bf16"}).pinned().tables["emb"].precision \
        is Precision.BF16
    given = _config(wide={"dim": 1}).pinned()
    assert given.model.wide is WideLayout.TABLE and set(given.ps_tables) == {"emb", "wide"}
    assert given.tables["wide"].precision is Precision.FP16  # "auto" too
    # a model without first-order weights has no layout to pin
    assert _config({"name": "dcn_v2", "hidden": [8]}).pinned().wide is None


def test_a_resumed_run_keeps_what_its_checkpoint_holds() -> None:
    old = _held(_config({"wide": "table"}, {"precision": "fp32"}))  # written before "auto"
    assert set(old) == {"emb", "wide"}
    pinned = _config().pinned(old)
    assert pinned.model.wide is WideLayout.TABLE and pinned.ps_tables == old
    assert pinned.to_dict()["model"]["wide"] == "table"
    assert {t["precision"] for t in pinned.to_dict()["tables"].values()} == {"fp32"}
    seg = _held(_config({"wide": "segment"}, {"precision": "bf16"}))
    assert _config().pinned(seg).ps_tables == seg
    # a table the checkpoint lacks is resolved as new; explicit settings that agree pass
    extra = _config(item={"dim": 2}).pinned(old)
    assert extra.tables["item"].precision is Precision.FP16
    assert _config({"wide": "table"}, {"precision": "fp32"}).pinned(old).ps_tables == old


@pytest.mark.parametrize("model, emb, tables, message", [
    ({"wide": "segment"}, {}, {},
     r"model\.wide = 'segment' keeps the first-order weights in the rows of tables\.emb "
     r"\(segment rows\), and the checkpoint holds them in a table of their own "
     r"\(tables\.wide\) \(tables \['emb', 'wide'\]\); set model\.wide = 'table' or 'auto'"),
    ({}, {"precision": "fp16"}, {},
     r"tables\.emb\.precision: 'fp16' in this config, 'fp32' in the checkpoint"),
], ids=["layout", "precision"])
def test_an_explicit_setting_against_the_checkpoint_names_both(
        model: dict, emb: dict, tables: dict, message: str) -> None:
    old = _held(_config({"wide": "table"}, {"precision": "fp32"}))
    with pytest.raises(CheckpointMismatchError, match=message):
        _config(model, emb, **tables).pinned(old)
    seg = _held(_config({"wide": "segment"}))
    with pytest.raises(CheckpointMismatchError, match=r"model\.wide = 'auto' with a "
                       r"\[tables\.wide\] section keeps the first-order weights in a table"):
        _config(wide={"dim": 1}).pinned(seg)


def _train(config: RunConfig, run_dir: Path, resume: bool = False) -> RunConfig:
    """Train ``config`` in ``run_dir`` as ``kraken train`` does (and checkpoint);
    returns the config it pinned."""
    seen: list[RunConfig] = []

    def keep(trainer: Trainer) -> None:
        seen.append(trainer.meta["config"])  # type: ignore[arg-type]

    train_and_report(config, run_dir, resume=resume, on_trainer=keep)
    return RunConfig.from_dict({**config.to_dict(), **seen[0]})


def test_kraken_train_resumes_a_two_table_fp32_checkpoint_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    before = _config({"wide": "table"}, {"precision": "fp32"})
    _train(dataclasses.replace(before, trainer=dataclasses.replace(
        before.trainer, max_samples=512)), run_dir)
    store = CheckpointStore(run_dir / "checkpoints")
    first = store.latest()
    assert first is not None and set(store.held_tables(first)) == {"emb", "wide"}
    after = _train(_config(), run_dir, resume=True)  # the defaults: "auto" everywhere
    assert "resumed at 512 samples" in capsys.readouterr().out
    assert after.model.wide is WideLayout.TABLE
    held = store.held_tables(store.latest())  # type: ignore[arg-type]
    assert set(held) == {"emb", "wide"}
    assert all(t.precision is Precision.FP32 for t in held.values())
    # a fresh run directory with the same defaults gets segment rows in fp16
    fresh = _train(_config(), tmp_path / "fresh")
    assert fresh.model.wide is WideLayout.SEGMENT
    held = CheckpointStore(tmp_path / "fresh" / "checkpoints").held_tables(
        CheckpointStore(tmp_path / "fresh" / "checkpoints").latest())  # type: ignore[arg-type]
    assert set(held) == {"emb"} and held["emb"].dim == 5
    assert held["emb"].precision is Precision.FP16


def test_restoring_other_tables_names_both_layouts(tmp_path: Path) -> None:
    two = _config({"wide": "table"}, {"precision": "fp32"})
    run = build_run(two)
    Trainer(model=run.model, embedding=run.embedding, ps=run.ps, stream=run.stream,
            config=run.config.trainer, run_dir=tmp_path).checkpoint()
    run.ps.close()
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.latest()
    assert path is not None
    with LocalPS(_config().pinned().ps_tables) as seg, \
            pytest.raises(CheckpointMismatchError, match=r"holds tables emb \(dim 4, fp32, "
                          r"rowwise_adagrad\), wide \(dim 1, fp32, rowwise_adagrad\), this run "
                          r"emb \(dim 5, fp16, rowwise_adagrad\); the checkpoint keeps "
                          r"first-order weights in a table of their own"):
        store.load_tables(path, seg)
    # build_run given the checkpoint pins "auto" to it, and the rows load
    again = build_run(_config(), checkpoint=path)
    try:
        store.load_tables(path, again.ps)
        keys = np.arange(1, 50, dtype=np.int64)
        assert set(again.ps.pull({"emb": keys, "wide": keys})) == {"emb", "wide"}
    finally:
        again.ps.close()
