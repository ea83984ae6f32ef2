"""The block split of a stream among workers, against a simple reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.train.split import split_batches


class _Listed:
    """The same stream seen through the generic path (no fast path for it)."""

    def __init__(self, inner: SyntheticStream) -> None:
        self.inner, self.schema = inner, inner.schema

    @property
    def skipped(self) -> int:
        return 0

    def batches(self, batch_size: int, start: int = 0):  # noqa: ANN201
        return self.inner.batches(batch_size, start)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(0, 3000), block=st.integers(1, 700), world=st.integers(1, 4),
       origin=st.integers(0, 3000))
def test_blocks_cover_the_stream_from_origin_once_and_round_robin(
        n: int, block: int, world: int, origin: int) -> None:
    stream = SyntheticStream(SyntheticConfig(n_records=n, n_fields=2, vocab=50))
    whole = list(stream.batches(block, start=origin)) if origin < n else []
    for generic in (False, True):
        s = _Listed(stream) if generic else stream
        parts = [list(split_batches(s, block, origin=origin, rank=r, world=world))  # type: ignore[arg-type]
                 for r in range(world)]
        for r, mine in enumerate(parts):
            expect = whole[r::world]  # reference: block b goes to worker b mod W
            assert [b.offset for b in mine] == [b.offset for b in expect]
            for got, want in zip(mine, expect, strict=True):
                np.testing.assert_array_equal(got.keys, want.keys)
                np.testing.assert_array_equal(got.label, want.label)
        ends = sorted(b.offset for p in parts for b in p)
        starts = sorted(b.offset - len(b) for p in parts for b in p)
        assert starts == ([origin] + ends[:-1] if ends else [])  # no gap, no overlap
        assert ends[-1:] == ([n] if n > origin else [])  # to the end of the stream
        assert sum(len(b) for p in parts for b in p) == max(0, n - origin)
