"""The sparse table: collisionless, growing, budgeted storage of embedding rows."""

from kraken.table.admission import AdmissionPolicy, Always, CountMin, Probabilistic
from kraken.table.config import TableConfig
from kraken.table.eviction import LFU, LRU, TTL, EvictionPolicy
from kraken.table.init import Initializer, Normal, Uniform, Zeros
from kraken.table.keys import field_keys, split_keys
from kraken.table.table import SparseTable, TableDelta, TableRows, TableStats

__all__ = [
    "LFU",
    "LRU",
    "TTL",
    "AdmissionPolicy",
    "Always",
    "CountMin",
    "EvictionPolicy",
    "Initializer",
    "Normal",
    "Probabilistic",
    "SparseTable",
    "TableConfig",
    "TableDelta",
    "TableRows",
    "TableStats",
    "Uniform",
    "Zeros",
    "field_keys",
    "split_keys",
]
