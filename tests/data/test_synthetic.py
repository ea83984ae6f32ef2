"""SyntheticStream: determinism by seed and exact resume."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kraken.data import SyntheticConfig, SyntheticStream, validate_batch
from tests.data.fixtures import assert_same_rows, concat

CONFIG = SyntheticConfig(n_records=3000, n_fields=4, n_dense=2, vocab=1000)


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = concat(list(SyntheticStream(CONFIG).batches(500)))
    b = concat(list(SyntheticStream(CONFIG).batches(700)))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    other = SyntheticStream(SyntheticConfig(n_records=3000, n_fields=4, n_dense=2, vocab=1000,
                                            seed=1))
    c = concat(list(other.batches(500)))
    assert not np.array_equal(a["keys"], c["keys"])
    assert not np.array_equal(a["label"], c["label"])


def test_batches_fit_the_schema_and_end_at_n_records() -> None:
    stream = SyntheticStream(CONFIG)
    batches = list(stream.batches(1024))
    for b in batches:
        validate_batch(b, stream.schema)
    assert [b.offset for b in batches] == [1024, 2048, 3000]
    assert stream.skipped == 0


@given(batch_size=st.integers(1, 1500), cut=st.integers(0, 100))
def test_resume_equals_uninterrupted(batch_size: int, cut: int) -> None:
    whole = list(SyntheticStream(CONFIG).batches(batch_size))
    k = cut % len(whole)
    resumed = list(SyntheticStream(CONFIG).batches(batch_size, start=whole[k].offset))
    assert_same_rows(whole[k + 1:], resumed)
