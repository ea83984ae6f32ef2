"""The fused 16-bit gathers (``kernels.gather16``, ``pull.resolve_gather16``) decode exactly as
``codec.decode`` does, bit for bit, over every fp16 and bf16 bit pattern (NaN payloads,
infinities, subnormals and signed zeros included), in both builds (serial and parallel)."""

from __future__ import annotations

import numpy as np
import pytest

import kraken
from kraken.config import Precision
from kraken.table import kernels, pull
from kraken.table.codec import STORAGE, decode, encode

_ALL = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(-1, 16)  # [4096, 16]
_DEFAULT = np.float32(-0.25)


def _want(rows: np.ndarray, precision: Precision) -> np.ndarray:
    """``codec.decode`` of ``_ALL[rows]`` as float32 bits, the default's bits where -1."""
    out = np.full((rows.shape[0], 16), _DEFAULT, dtype=np.float32)
    present = rows >= 0
    out[present] = decode(_ALL[rows[present]].view(STORAGE[precision]), precision)
    return out.view(np.uint32)


def _rows(seed: int) -> np.ndarray:
    """Every stored row once, in a shuffled order, with absent (-1) rows between."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(_ALL.shape[0]), np.full(300, -1)]).astype(np.int64)
    return rng.permutation(rows)


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_gather16_decodes_every_pattern_like_the_codec(precision: Precision,
                                                       build: str) -> None:
    rows = _rows(1)
    out = np.zeros((rows.shape[0], 16), dtype=np.uint32)
    getattr(kernels.gather16, build)(rows, _ALL, precision is Precision.BF16,
                                     _DEFAULT.view(np.uint32), out)
    np.testing.assert_array_equal(out, _want(rows, precision))


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
@pytest.mark.parametrize("build", ["serial", "parallel"])
def test_resolve_gather16_resolves_pending_codes_then_decodes(precision: Precision,
                                                              build: str) -> None:
    final = _rows(2)
    # half of the rows arrive as pending codes -2 - u, resolved through row_of[u]
    row_of = np.concatenate([final[::2], np.full(7, -1)])
    rows = final.copy()
    rows[::2] = -2 - np.arange(final[::2].shape[0])
    out = np.zeros((rows.shape[0], 16), dtype=np.uint32)
    getattr(pull.resolve_gather16, build)(rows, row_of, _ALL, precision is Precision.BF16,
                                          _DEFAULT.view(np.uint32), out)
    np.testing.assert_array_equal(rows, final)
    np.testing.assert_array_equal(out, _want(final, precision))


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
def test_16bit_table_reads_and_pulls_what_it_stores(precision: Precision) -> None:
    """Through the table: ``lookup`` (read and training pull, 40k keys: the parallel
    builds) returns the decoded stored weights, and the default for keys without a row."""
    config = kraken.TableConfig(dim=16, capacity=50_000, precision=precision,
                                admission=kraken.Always(), default_value=float(_DEFAULT))
    table = kraken.SparseTable(config)
    rng = np.random.default_rng(3)
    keys = rng.permutation(np.arange(1, 30_001, dtype=np.int64))
    values = rng.normal(0.0, 3.0, size=(keys.shape[0], 16)).astype(np.float32)
    table.assign(keys, values, now=1)
    stored = decode(encode(values, precision), precision)
    probe = np.concatenate([keys, -keys[:10_000]])  # present, then absent
    order = rng.permutation(probe.shape[0])
    want = np.concatenate([stored, np.full((10_000, 16), _DEFAULT, np.float32)])[order]
    np.testing.assert_array_equal(table.lookup(probe[order]), want)
    train = table.lookup(keys[::-1], train=True, now=2)
    np.testing.assert_array_equal(train, stored[::-1])
