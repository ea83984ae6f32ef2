"""Checkpoint manifest: what a checkpoint holds and where its stream resumes.

A checkpoint is a directory, complete once ``manifest.json`` exists in it and it
carries its final name; ``LATEST`` in the root names the newest one::

    ROOT/
      LATEST                         "ckpt-000000000420"
      ckpt-000000000420/
        manifest.json                Manifest (below)
        tables/<name>.ktab           one sparse table each (kraken.arrayfile format)
        <part>.kdat                  named array files: dense model, optimizer, metrics

An incremental checkpoint's table files hold only what changed since its ``base`` (the
checkpoint before it); ``chain`` names every checkpoint it needs, the full one first.
Restoring it loads the full one's tables, then applies each later one's in order.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kraken.errors import CheckpointVersionError, CorruptCheckpointError

__all__ = ["MANIFEST", "MANIFEST_VERSION", "Manifest"]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Manifest:
    """``step``: batches trained; ``samples``: samples trained; ``stream_offset``: the
    stream position to resume from; ``files``: relative path -> size in bytes;
    ``meta``: free-form JSON (config, hash version, clocks); ``ps``: the shard layout
    the tables were written with (bucket table and each shard's directory, files and
    checksums), ``None`` in checkpoints from before sharding (one table directory).
    ``chain``: the checkpoints (directory names, oldest first, a full one first) whose
    tables this one's build on; empty for a full checkpoint. ``chain[-1]`` is its base."""

    step: int
    samples: int
    stream_offset: int
    files: dict[str, int]
    meta: dict[str, Any]
    created: float
    version: int = MANIFEST_VERSION
    ps: dict[str, Any] | None = None
    chain: list[str] = dataclasses.field(default_factory=list)

    @property
    def incremental(self) -> bool:
        return bool(self.chain)

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise CorruptCheckpointError(f"{directory}: no {MANIFEST} (incomplete checkpoint)"
                                         ) from None
        except ValueError as exc:
            raise CorruptCheckpointError(f"{path}: unreadable: {exc}") from exc
        if doc.get("version") != MANIFEST_VERSION:
            raise CheckpointVersionError(
                f"{path}: manifest version {doc.get('version')}, this build reads "
                f"{MANIFEST_VERSION}")
        try:
            m = cls(**doc)
            if not isinstance(m.chain, list) or not all(isinstance(c, str) for c in m.chain):
                raise TypeError(f"chain must be a list of checkpoint names, got {m.chain!r}")
        except TypeError as exc:
            raise CorruptCheckpointError(f"{path}: {exc}") from exc
        for rel, size in m.files.items():
            f = directory / rel
            if not f.is_file() or f.stat().st_size != size:
                raise CorruptCheckpointError(f"{directory}: file {rel} is missing or has the "
                                             f"wrong size (expected {size} bytes)")
        return m
