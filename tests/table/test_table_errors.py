"""Bad input raises a KrakenError that names the problem and leaves the table unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import kraken
from kraken.table import TableConfig


def _snapshot(t: kraken.SparseTable) -> dict[str, object]:
    rows = t.export()
    order = np.argsort(rows.keys)
    s = t.stats()
    return {"keys": rows.keys[order].tolist(), "weights": rows.weights[order].tolist(),
            "state": rows.state[order].tolist(), "last_seen": rows.last_seen[order].tolist(),
            "stats": (s.live_rows, s.admitted, s.updated_rows, s.clock)}


@pytest.fixture
def table() -> kraken.SparseTable:
    t = kraken.SparseTable(TableConfig(dim=4, capacity=64, optimizer=kraken.AdaGrad()))
    t.lookup(np.arange(10), train=True, now=3)
    t.apply_gradients(np.arange(10), np.ones((10, 4), np.float32), now=3)
    return t


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t.lookup(np.array([1.5, 2.0])), kraken.DTypeError, "integer array"),
    (lambda t: t.lookup(np.array(["a"])), kraken.DTypeError, "integer array"),
    (lambda t: t.lookup(np.array([1]), train=True, now=-1), kraken.InputError, "now must be"),
    (lambda t: t.lookup(np.array([1]), train=True, now=2**40), kraken.InputError, "now must be"),
    (lambda t: t.apply_gradients(np.arange(3), np.ones((2, 4), np.float32), now=1),
     kraken.ShapeError, r"shape \(3, 4\)"),
    (lambda t: t.apply_gradients(np.arange(3), np.ones((3, 5), np.float32), now=1),
     kraken.ShapeError, "dim 4"),
    (lambda t: t.apply_gradients(np.arange(3), np.ones((3, 4), np.float64), now=1),
     kraken.DTypeError, "float32, got float64"),
    (lambda t: t.apply_gradients(np.arange(3), [[0.0] * 4] * 3, now=1),
     kraken.DTypeError, "numpy array"),
    (lambda t: t.apply_gradients(np.arange(2), np.array([[1, np.nan, 0, 0], [0, 0, 0, 1]],
                                                        np.float32), now=1),
     kraken.NonFiniteError, "1 NaN or inf"),
    (lambda t: t.apply_gradients(np.arange(1), np.full((1, 4), np.inf, np.float32), now=1),
     kraken.NonFiniteError, "4 NaN or inf"),
    (lambda t: t.apply_gradients(np.arange(1), np.ones((1, 4), np.float32), now=1.5),
     kraken.InputError, "integer step"),
    (lambda t: t.assign(np.array([1, 1]), np.ones((2, 4), np.float32)),
     kraken.InputError, "distinct"),
    (lambda t: t.evict(now=-3), kraken.InputError, "now must be"),
    (lambda t: t.touched_since(10**6), kraken.InputError, "newer than"),
    (lambda t: t.touched_since(1.5), kraken.InputError, "version must be a table version"),
    (lambda t: t.lookup([[1, 2], [3]]), kraken.ShapeError, "rectangular"),
    (lambda t: t.load_rows({"keys": [1]}), kraken.InputError, "TableRows"),
])
def test_bad_input_is_named_and_changes_nothing(table, call, error, message) -> None:
    before = _snapshot(table)
    with pytest.raises(error, match=message):
        call(table)
    assert _snapshot(table) == before


def test_errors_are_kraken_errors_and_value_errors() -> None:
    for cls in (kraken.ShapeError, kraken.DTypeError, kraken.NonFiniteError,
                kraken.ConfigError, kraken.CorruptCheckpointError):
        assert issubclass(cls, kraken.KrakenError) and issubclass(cls, ValueError)


@pytest.mark.parametrize("kwargs, message", [
    ({"dim": 0}, "dim: must be >= 1"),
    ({"dim": 4, "capacity": 0}, "capacity: must be >= 1"),
    ({"dim": 4, "precision": "fp8"}, "precision: expected one of"),
    ({"dim": True}, "dim: expected an integer"),
    ({"dim": 4, "default_value": float("nan")}, "default_value"),
])
def test_config_errors_name_the_key(kwargs, message) -> None:
    with pytest.raises(kraken.ConfigError, match=message):
        TableConfig(**kwargs)


@pytest.mark.parametrize("d, message", [
    ({"dim": 4, "optimizer": {"type": "adamw"}}, r"table\.optimizer\.type: unknown 'adamw'"),
    ({"dim": 4, "optimizer": {"type": "adam", "lr": -1}}, r"table\.optimizer\.lr: must be >"),
    ({"dim": 4, "eviction": [{"type": "lru", "high_watermark": 2}]},
     r"table\.eviction\[0\]\.high_watermark: must be <= 1"),
    ({"dim": 4, "admission": {"type": "count_min", "treshold": 2}},
     r"table\.admission: unknown key\(s\) \['treshold'\]"),
    ({"dim": 4, "capasity": 10}, r"table: unknown key\(s\) \['capasity'\]"),
    ({"capacity": 10}, r"table\.dim: required"),
])
def test_config_from_dict_errors_carry_the_path(d, message) -> None:
    with pytest.raises(kraken.ConfigError, match=message):
        TableConfig.from_dict(d)


def test_config_round_trips_through_dict() -> None:
    cfg = TableConfig(dim=8, capacity=99, optimizer=kraken.FTRL(l1=0.5),
                      admission=kraken.CountMin(threshold=4, width=128),
                      eviction=(kraken.TTL(7), kraken.LFU(0.9, 0.5, decay=0.25)),
                      precision=kraken.Precision.BF16, initializer=kraken.Normal(0.2), seed=3)
    assert TableConfig.from_dict(cfg.to_dict()) == cfg


def test_stale_delta_version_is_reported() -> None:
    t = kraken.SparseTable(TableConfig(dim=1, eviction=kraken.TTL(0), delta_log=2))
    v0 = t.touched_since(0).version
    recent = v0
    for step in range(4):
        t.lookup(np.array([step]), train=True, now=step * 10)
        assert t.evict(now=step * 10 + 5).tolist() == [step]
        recent = t.export().version  # a cursor for the next delta
    with pytest.raises(kraken.StaleVersionError, match="resynchronise"):
        t.touched_since(v0)
    t.lookup(np.array([99]), train=True, now=50)
    assert t.touched_since(recent).keys.tolist() == [99]


def test_a_config_that_is_not_a_table_config_is_a_config_error() -> None:
    with pytest.raises(kraken.ConfigError, match="must be a TableConfig, got dict"):
        kraken.SparseTable({"dim": 4})  # type: ignore[arg-type]
