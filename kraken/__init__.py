"""Kraken: memory-efficient continual learning for large-scale real-time recommendation.

The public API is what this module exports; submodules are implementation detail
unless documented.
"""

from kraken.config import Precision
from kraken.errors import (
    CapacityError,
    CheckpointError,
    CheckpointMismatchError,
    CheckpointVersionError,
    ConfigError,
    CorruptCheckpointError,
    DataError,
    DTypeError,
    InputError,
    KrakenError,
    NonFiniteError,
    NotReadyError,
    ShapeError,
    StaleVersionError,
    TrainingDivergedError,
    TransportError,
    VersionGapError,
)
from kraken.optim import FTRL, SGD, AdaGrad, Adam, RAdaGrad, RowWiseAdaGrad, SparseOptimizer
from kraken.table import (
    LFU,
    LRU,
    TTL,
    Always,
    CountMin,
    Normal,
    Probabilistic,
    SparseTable,
    TableConfig,
    TableDelta,
    TableStats,
    Uniform,
    Zeros,
    field_keys,
)

__version__ = "0.1.0"

__all__ = [
    "FTRL",
    "LFU",
    "LRU",
    "SGD",
    "TTL",
    "AdaGrad",
    "Adam",
    "Always",
    "CapacityError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointVersionError",
    "ConfigError",
    "CorruptCheckpointError",
    "CountMin",
    "DTypeError",
    "DataError",
    "InputError",
    "KrakenError",
    "NonFiniteError",
    "Normal",
    "NotReadyError",
    "Precision",
    "Probabilistic",
    "RAdaGrad",
    "RowWiseAdaGrad",
    "ShapeError",
    "SparseOptimizer",
    "SparseTable",
    "StaleVersionError",
    "TableConfig",
    "TableDelta",
    "TableStats",
    "TrainingDivergedError",
    "TransportError",
    "Uniform",
    "VersionGapError",
    "Zeros",
    "__version__",
    "field_keys",
]
