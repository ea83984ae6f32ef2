"""The curated public API: pinned so that changes to it are deliberate."""

from __future__ import annotations

import kraken

EXPECTED = [
    "FTRL", "LFU", "LRU", "SGD", "TTL", "AdaGrad", "Adam", "Always", "CapacityError",
    "CheckpointError", "CheckpointMismatchError", "CheckpointVersionError", "ConfigError",
    "CorruptCheckpointError", "CountMin", "DTypeError", "DataError", "InputError", "KrakenError",
    "NonFiniteError", "Normal", "Precision", "Probabilistic", "RAdaGrad", "RowWiseAdaGrad",
    "ShapeError", "SparseOptimizer", "SparseTable", "StaleVersionError", "TableConfig",
    "TableDelta", "TableStats", "Uniform", "Zeros", "__version__", "field_keys",
    "NotReadyError", "VersionGapError", "TransportError", "LifecycleError",
]


def test_all_is_pinned() -> None:
    assert sorted(kraken.__all__) == sorted(EXPECTED)


def test_every_name_in_all_exists() -> None:
    for name in kraken.__all__:
        assert getattr(kraken, name) is not None, name
