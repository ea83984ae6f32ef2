"""Checkpoints, full and incremental: sparse tables, named array parts and the stream
offset, atomically."""

from kraken.checkpoint.manifest import Manifest
from kraken.checkpoint.store import CheckpointStore

__all__ = ["CheckpointStore", "Manifest"]
