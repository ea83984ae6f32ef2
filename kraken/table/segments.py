"""Rows made of segments: a table config widened by a zero column of its own.

A model's first-order weight can live in the last column of its embedding row,
``[embedding (D) | wide (1)]`` (``model.wide = "segment"``); this module derives the
config of such rows from the embedding table's, without the model zoo (a parameter-server
shard derives its tables with it, without importing torch).
"""

from __future__ import annotations

import dataclasses

from kraken.errors import ConfigError
from kraken.table.config import TableConfig
from kraken.table.init import Columns, Zeros

__all__ = ["with_wide_column"]


def with_wide_column(emb: TableConfig, path: str = "tables.emb") -> TableConfig:
    """``emb`` (dim ``D``) widened to rows ``[embedding (D) | wide (1)]``.

    The wide column starts at zero (``Columns``: ``emb``'s initializer, then ``Zeros``);
    a row-wise optimizer (one with ``segments``) gets one more segment (``segments = (D,
    1)``, or its own segments followed by 1), so the wide weight keeps its own accumulator
    as it would in a table of its own; per-element optimizers (Adam, AdaGrad, FTRL, SGD)
    need nothing. Precision, capacity and policies are ``emb``'s. A config that does not
    validate raises :class:`ConfigError` prefixed with ``path``.
    """
    d = emb.dim
    init = emb.initializer
    init = (Columns(widths=(*init.widths, 1), parts=(*init.parts, Zeros()))
            if isinstance(init, Columns) else Columns(widths=(d, 1), parts=(init, Zeros())))
    opt = emb.optimizer
    if "segments" in {f.name for f in dataclasses.fields(opt)}:  # row-wise: one per segment
        opt = dataclasses.replace(opt, segments=(*(opt.segments or (d,)), 1))
    try:
        return dataclasses.replace(emb, dim=d + 1, initializer=init, optimizer=opt)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc}") from None
