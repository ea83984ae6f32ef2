"""The continual trainer: determinism, exact resume, progressive evaluation, stops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kraken.errors import CheckpointError, ConfigError
from kraken.train import TrainerConfig
from kraken.train.trainer import _all_finite
from tests.train.helpers import make_trainer, model_state


def test_same_seed_same_model(tmp_path: Path) -> None:
    a = make_trainer(tmp_path / "a")
    b = make_trainer(tmp_path / "b")
    sa, sb = a.run(), b.run()
    assert sa.samples == sb.samples == 12_000
    assert model_state(a) == model_state(b)
    assert sa.metrics == sb.metrics


RESUMED_MODELS = [("deepfm", {}),
                  ("nfm", {"hidden": (16,), "dropout": 0.3})]  # dropout draws random masks


@pytest.mark.parametrize("model, model_kw", RESUMED_MODELS, ids=[m for m, _ in RESUMED_MODELS])
def test_resume_gives_the_uninterrupted_model(tmp_path: Path, model: str, model_kw) -> None:
    full = make_trainer(tmp_path / "full", model=model, model_kw=model_kw)
    full.run()
    first = make_trainer(tmp_path / "split", max_samples=5120, model=model, model_kw=model_kw)
    s1 = first.run()
    assert s1.samples == 5120 and s1.stopped == "max_samples reached"
    torch.rand(1000)  # the global RNG of the process has moved on: it must not matter
    second = make_trainer(tmp_path / "split", model=model, model_kw=model_kw)
    assert second.resume()
    assert second.samples == 5120 and second.offset == 5120
    s2 = second.run()
    assert s2.samples == 12_000
    assert model_state(second) == model_state(full)
    assert s2.metrics == full.cumulative.get()


def test_dropout_draws_from_the_trainer_seed() -> None:
    kw = {"model": "nfm", "model_kw": {"hidden": (16,), "dropout": 0.3}, "n_records": 2048}
    a, b, c = (make_trainer(None, **kw) for _ in range(3))
    c.generator.manual_seed(12345)  # same initial weights, other dropout draws
    before = torch.get_rng_state()
    a.run(), b.run(), c.run()
    assert torch.equal(torch.get_rng_state(), before)  # training leaves the global RNG alone
    assert model_state(a) == model_state(b)
    assert model_state(a) != model_state(c)


def test_resume_from_names_an_older_checkpoint(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, checkpoint_every_samples=2048, keep_checkpoints=5)
    tr.run()
    names = [p.name for p in tr.store.checkpoints()]
    older = names[-2]
    again = make_trainer(tmp_path)
    assert again.resume(older)
    assert again.batches == int(older.split("-")[1])
    by_step = make_trainer(tmp_path)
    assert by_step.resume(str(again.batches)) and by_step.samples == again.samples
    with pytest.raises(CheckpointError, match="no checkpoint 'ckpt-9' in"):
        make_trainer(tmp_path).resume("ckpt-9")


def test_metrics_file_is_closed_when_the_run_fails(tmp_path: Path, monkeypatch) -> None:
    import kraken.train.records as records_mod

    opened = []
    real_open = open

    def tracking_open(*args, **kw):
        f = real_open(*args, **kw)
        opened.append(f)
        return f

    monkeypatch.setattr(records_mod, "open", tracking_open, raising=False)
    tr = make_trainer(tmp_path, log_every_s=1e-9)

    def boom(rec: dict) -> None:
        raise KeyboardInterrupt  # any way out, even one that is not an Exception

    tr.on_record = boom
    with pytest.raises(KeyboardInterrupt):
        tr.run()
    assert len(opened) == 1 and opened[0].closed
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1  # written, then closed


def test_predictions_are_scored_before_learning(tmp_path: Path) -> None:
    tr = make_trainer(None, n_records=512)
    prepared = tr.embedding.prepare(next(tr.stream.batches(512)))
    # score the batch with the untouched model on a copy of the PS state
    twin = make_trainer(None, n_records=512)
    with torch.no_grad():
        pulled = twin.embedding.pull(twin.embedding.prepare(prepared.batch), train=True,
                                     now=int(prepared.batch.event_time.max()))
        p = torch.sigmoid(twin.model(twin.embedding(pulled))).numpy()
    tr.run()
    expected = -np.mean(prepared.batch.label * np.log(np.clip(p, 1e-7, 1))
                        + (1 - prepared.batch.label) * np.log(np.clip(1 - p, 1e-7, 1)))
    assert tr.cumulative.get()["logloss"] == pytest.approx(expected, rel=1e-5)


def test_learning_beats_chance(tmp_path: Path) -> None:
    tr = make_trainer(None, n_records=30_000)
    s = tr.run()
    assert s.metrics["auc"] > 0.6
    assert 0.7 < s.metrics["calibration"] < 1.3


def test_stop_request_finishes_with_a_checkpoint(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, log_every_s=1e-6)
    seen: list[int] = []

    def on_record(rec: dict) -> None:
        seen.append(rec["samples"])
        if rec["samples"] >= 2048:
            tr.request_stop("test")

    tr.on_record = on_record
    s = tr.run()
    assert s.stopped == "test" and s.samples < 12_000
    assert s.checkpoint is not None and Path(s.checkpoint, "manifest.json").is_file()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "final" and lines[-1]["samples"] == s.samples
    assert {"samples_per_s", "window", "cumulative", "tables", "rss_mb"} <= set(lines[0])


def test_periodic_checkpoints_are_kept_and_pruned(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, checkpoint_every_samples=2048, keep_checkpoints=2)
    tr.run()
    done = sorted(p.name for p in (tmp_path / "checkpoints").glob("ckpt-*"))
    assert len(done) == 2
    assert (tmp_path / "checkpoints" / "LATEST").read_text() == done[-1]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_failed_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    tr = make_trainer(tmp_path, max_samples=1024)
    tr.run()
    before = (tmp_path / "checkpoints" / "LATEST").read_text()

    def boom(directory) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tr.ps, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        tr.checkpoint()
    assert (tmp_path / "checkpoints" / "LATEST").read_text() == before
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    fresh = make_trainer(tmp_path)
    assert fresh.resume() and fresh.samples == 1024


@pytest.mark.parametrize("kw, message", [
    ({"batch_size": 0}, "batch_size: must be >= 1"),
    ({"dense_optimizer": "lamb"}, "dense_optimizer: expected one of"),
    ({"dense_lr": -1.0}, "dense_lr: must be >"),
])
def test_trainer_config_errors_name_the_key(kw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(**kw)


def test_a_non_finite_batch_is_skipped_and_training_goes_on() -> None:
    tr = make_trainer(None, n_records=4096)
    real = tr.stream.batches

    def poisoned(batch_size: int, start: int = 0):
        for i, b in enumerate(real(batch_size, start)):
            if i == 2:
                b.dense[:] = np.nan
            yield b

    tr.stream.batches = poisoned  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradients"):
        s = tr.run()
    assert s.samples == 4096 and tr.nonfinite_batches == 1
    assert tr.cumulative.samples == 4096 - 512
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_divergence_is_reported_not_looped() -> None:
    from kraken.errors import TrainingDivergedError

    tr = make_trainer(None, n_records=30_000)
    real = tr.stream.batches

    def all_nan(batch_size: int, start: int = 0):
        for b in real(batch_size, start):
            b.dense[:] = np.inf
            yield b

    tr.stream.batches = all_nan  # type: ignore[method-assign]
    with pytest.warns(RuntimeWarning), pytest.raises(TrainingDivergedError, match="20 batches"):
        tr.run()


def test_table_bytes_are_recorded_per_table_at_records_only(tmp_path: Path) -> None:
    tr = make_trainer(tmp_path, window=4096, log_every_s=1e9)  # no progress records
    calls = []
    real = tr.ps.stats
    tr.ps.stats = lambda: calls.append(1) or real()  # type: ignore[method-assign]
    s = tr.run()
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in recs] == ["window", "window", "final"]
    assert len(calls) == len(recs) < s.batches  # not once per batch
    assert set(recs[-1]["tables"]) == {"emb", "wide"}
    for name, t in s.tables.items():
        assert recs[-1]["tables"][name]["memory_bytes"] == t["memory_bytes"] > 0
    assert recs[-1]["skipped"] == s.skipped == 0


def test_resume_from_an_incremental_checkpoint_gives_the_uninterrupted_model(
        tmp_path: Path) -> None:
    from kraken.checkpoint import Manifest
    full = make_trainer(tmp_path / "full")
    full.run()
    kw = {"checkpoint_every_samples": 1024, "checkpoint_full_every": 3, "keep_checkpoints": 1}
    first = make_trainer(tmp_path / "split", max_samples=5120, **kw)
    first.run()
    latest = first.store.latest()
    assert latest is not None and Manifest.read(latest).chain  # builds on earlier ones
    second = make_trainer(tmp_path / "split", **kw)
    assert second.resume() and second.samples == 5120
    second.run()
    assert model_state(second) == model_state(full)


_EXTREMES = st.sampled_from([0.0, -0.0, 3.4e38, -3.4e38, 1e-45, math.inf, -math.inf, math.nan])


@given(st.lists(st.tuples(st.sampled_from(["float32", "float16", "float64"]),
                          st.lists(st.one_of(st.floats(-1e4, 1e4), _EXTREMES), max_size=40)),
                max_size=4))
def test_gradient_check_agrees_with_elementwise_isfinite(parts) -> None:
    tensors = [torch.tensor(v, dtype=getattr(torch, d)) for d, v in parts]
    want = all(bool(torch.isfinite(t).all()) for t in tensors)
    assert _all_finite(tensors) == want


@pytest.mark.parametrize("pipeline", [False, True], ids=["sync", "pipelined"])
def test_background_push_trains_the_model_of_synchronous_pushes(pipeline: bool) -> None:
    """The dense step overlaps the push, but every pull still sees every earlier push."""
    sync = make_trainer(None, n_records=8_000, pipeline=pipeline)
    bg = make_trainer(None, n_records=8_000, pipeline=pipeline,
                      ps_kw={"background_push": True})
    s1, s2 = sync.run(), bg.run()
    assert model_state(bg) == model_state(sync)
    assert s2.metrics == s1.metrics and s2.tables == s1.tables
