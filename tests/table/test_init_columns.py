"""The ``Columns`` initializer (a row composed by column ranges) and a table whose rows are
made of segments: ``[embedding (D) | first-order weight (1)]``."""

from __future__ import annotations

import numpy as np
import pytest

from kraken.errors import ConfigError, ShapeError
from kraken.optim import RowWiseAdaGrad
from kraken.table import Normal, SparseTable, TableConfig, Uniform, Zeros
from kraken.table.init import Columns, initializer_from_dict
from kraken.table.persistence import read_table_config

KEYS = np.array([5, -3, 1 << 40, 17, 0], dtype=np.int64)


def _fill(init, keys: np.ndarray, width: int, seed: int = 7) -> np.ndarray:
    out = np.full((keys.shape[0], width), np.nan, dtype=np.float32)
    init.fill(keys, seed, out)
    return out


@pytest.mark.parametrize("parts", [(Uniform(0.3), Zeros()), (Normal(0.2), Uniform(1.0)),
                                   (Zeros(), Normal(1.0), Uniform(0.5))])
def test_each_part_fills_its_columns_as_it_would_a_row_of_its_own(parts) -> None:
    widths = (5, 1, 3)[: len(parts)]
    init = Columns(widths=widths, parts=parts)
    got = _fill(init, KEYS, init.width)
    start = 0
    for w, p in zip(widths, parts):
        np.testing.assert_array_equal(got[:, start:start + w], _fill(p, KEYS, w))
        start += w
    assert init.width == sum(widths) and np.isfinite(got).all()


def test_columns_round_trip_and_errors_name_the_path() -> None:
    init = Columns(widths=(16, 1), parts=(Uniform(0.05), Zeros()))
    d = init.to_dict()
    assert d == {"type": "columns", "widths": [16, 1],
                 "parts": [{"type": "uniform", "scale": 0.05}, {"type": "zeros"}]}
    assert initializer_from_dict(d) == init
    bad = [({"widths": [2], "parts": [{"type": "zeros"}, {"type": "zeros"}]},
            r"^i\.parts: 2 initializers for 1 widths \[2\]"),
           ({"widths": [0], "parts": [{"type": "zeros"}]}, r"^i\.widths: every width must be"),
           ({"widths": [], "parts": []}, r"^i\.widths: expected a non-empty list"),
           ({"widths": [1], "parts": [{"type": "uniform", "scale": -1}]},
            r"^i\.parts\[0\]\.scale: must be >= 0"),
           ({"widths": [1], "parts": [d]}, r"^i\.parts\[0\]: expected a plain initializer")]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            initializer_from_dict({"type": "columns", **kw}, "i")
    with pytest.raises(ShapeError, match=r"out: expected float32\[U, 17\]"):
        init.fill(KEYS, 0, np.zeros((5, 16), np.float32))
    with pytest.raises(ConfigError, match=r"^t\.initializer\.widths: the columns sum to 17, "
                                          r"the row has dim 16"):
        TableConfig.from_dict({"dim": 16, "initializer": d}, "t")


def test_a_table_of_segmented_rows_trains_saves_and_loads(tmp_path) -> None:
    """Rows start as their parts; a push steps each segment with its own accumulator;
    the config (Columns, segments) survives the table file."""
    cfg = TableConfig(dim=5, optimizer=RowWiseAdaGrad(lr=0.5, segments=(4, 1)),
                      initializer=Columns(widths=(4, 1), parts=(Uniform(0.1), Zeros())), seed=3)
    t = SparseTable(cfg)
    w0 = t.lookup(KEYS, train=True, now=1)
    np.testing.assert_array_equal(w0[:, :4], _fill(Uniform(0.1), KEYS, 4, seed=3))
    np.testing.assert_array_equal(w0[:, 4], 0.0)
    g = np.zeros((KEYS.shape[0], 5), np.float32)
    g[:, :4], g[:, 4] = 0.01, 2.0  # tiny embedding gradient, large wide gradient
    t.apply_gradients(KEYS, g, now=2)
    w1 = t.lookup(KEYS)
    # first AdaGrad step of a segment: lr * g / sqrt(mean(g*g)) = lr * sign(g), per segment
    np.testing.assert_allclose(w1[:, :4], w0[:, :4] - 0.5, rtol=1e-5)
    np.testing.assert_allclose(w1[:, 4], -0.5, rtol=1e-5)
    t.save(tmp_path / "t.ktab")
    assert read_table_config(tmp_path / "t.ktab") == cfg
    back = SparseTable(cfg)
    back.load(tmp_path / "t.ktab")
    np.testing.assert_array_equal(back.lookup(KEYS), w1)
