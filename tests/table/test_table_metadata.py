"""Row metadata: 8 bytes a row (last access, version of the last change), plus a 4-byte
access count only when an eviction policy reads it."""

from __future__ import annotations

import numpy as np
import pytest

import kraken
from kraken.table import LFU, LRU, TTL, TableConfig


@pytest.mark.parametrize("eviction, meta", [((), 8), ((TTL(5), LRU(0.9, 0.5)), 8),
                                            ((LFU(0.9, 0.5),), 12)])
def test_bytes_per_row_are_weights_state_and_metadata(eviction: tuple, meta: int) -> None:
    cfg = TableConfig(dim=16, capacity=4096, optimizer=kraken.RowWiseAdaGrad(),
                      eviction=eviction)
    t = kraken.SparseTable(cfg)
    t.lookup(np.arange(1000), train=True, now=1)
    s = t.stats()
    assert s.memory_bytes - 12 * s.index_slots == 1000 * (16 * 4 + 4 + meta)


def test_a_table_without_counts_reads_zero_counts_and_still_evicts_by_recency() -> None:
    t = kraken.SparseTable(TableConfig(dim=2, capacity=10, eviction=LRU(0.5, 0.3)))
    t.lookup(np.arange(6), train=True, now=1)
    t.lookup(np.array([0, 0, 1, 2]), train=True, now=2)
    assert (t.export().count == 0).all()
    assert t.evict(3).tolist() == [3, 4, 5]  # 6 > 5 live: down to 3, least recent first
