"""Log entries to columns (no server): request ids, times, field layouts, against
simple references."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kraken.data._logentries import (
    EntryBlock,
    _request_ids,
    _times,
    columns,
    entry_ids,
    parse_actions,
)

DIGITS = st.text(alphabet="0123456789", min_size=0, max_size=22)
TEXT = st.one_of(DIGITS, st.text(max_size=6), DIGITS.map(lambda s: "-" + s),
                 st.sampled_from(["18446744073709551615", "18446744073709551616", "٣", "²",
                                  "007", " 1", "1e3", "+1"]))


@given(st.lists(TEXT, max_size=30))
def test_request_ids_are_unsigned_64_bit_decimals(values):
    rid, bad = _request_ids(np.array(values, dtype=object))
    for v, r, b in zip(values, rid, bad, strict=True):
        ok = re.fullmatch(r"[0-9]{1,20}", v) is not None and int(v) < 2**64
        assert (not b) == ok, v
        if ok:
            assert int(r) == int(v)


@given(st.lists(TEXT, max_size=30))
def test_times_are_integers_of_at_most_18_digits(values):
    ts, bad = _times(np.array(values, dtype=object))
    for v, t, b in zip(values, ts, bad, strict=True):
        ok = re.fullmatch(r"-?[0-9]{1,18}", v) is not None
        assert (not b) == ok, v
        if ok:
            assert int(t) == int(v)


names = st.sampled_from(["rid", "ts", "type", "x"])
entry = st.lists(st.tuples(names, st.text(max_size=3)), max_size=5)  # any text: UTF-8


@given(st.lists(entry, max_size=8), st.booleans())
def test_columns_read_any_layout_like_a_dict(fields, same_order):
    if same_order and fields:  # what producers write: one layout for every entry
        fields = [fields[0]] * len(fields)
    entries = [[f"{i + 1}-0", [x for kv in e for x in kv]] for i, e in enumerate(fields)]
    block = EntryBlock.from_entries(entries)
    cols = columns([block.slice(0, 3), block.slice(3, len(block))], ("rid", "ts", "x"))
    for i, e in enumerate(fields):
        d = dict(e)
        for name in ("rid", "ts", "x"):
            assert cols[name][i] == d.get(name, "")


def test_entry_ids_and_unknown_action_types():
    ms, seq = entry_ids(["1700000000000-0", "1700000000000-12"])
    assert ms.tolist() == [1700000000000] * 2 and seq.tolist() == [0, 12]
    acts, (bad, reasons) = parse_actions([EntryBlock.from_entries(
        [["1-0", ["rid", "5", "ts", "9", "type", "like"]],
         ["2-0", ["rid", "5", "ts", "9", "type", "purr"]]])], ("click", "like"), 4096)
    assert acts.kind.tolist() == [1] and bad.tolist() == [1]
    assert reasons == ["unknown action type 'purr'"]
