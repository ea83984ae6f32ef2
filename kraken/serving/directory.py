"""The model directory: the embedded transport, and what a shared filesystem carries across hosts.

Layout::

    DIR/versions/snapshot-000000000001.kdat   full state at version 1 (spec, rows, dense)
    DIR/versions/delta-000000000002.kdat      changes from 1 to 2
    DIR/versions/delta-000000000003.kdat      ...
    DIR/SNAPSHOT_REQUEST                      a follower that found a gap asks for a snapshot

When parameter-server shards publish the rows (``kraken ps --publish DIR``), the trainer's
versions above carry only the dense weights (and the spec), and every shard has the same
layout of its own, numbered per shard::

    DIR/layout.kdat                           {"shards": N}: the row streams to follow
    DIR/shards/shard-0000/versions/...        shard 0's row deltas and snapshots
    DIR/shards/shard-0000/SNAPSHOT_REQUEST    a follower asks shard 0 for a snapshot
    DIR/shards/shard-0001/...

Every file is written atomically (temporary name, fsync, rename), so a follower sees a
version whole or not at all. The publisher writes delta ``v`` before a snapshot of the
same ``v``, keeps the newest ``keep_snapshots`` snapshots and deletes the deltas they
make unnecessary (those not newer than the oldest kept snapshot).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kraken.arrayfile import read_arrays, write_arrays
from kraken.errors import CorruptCheckpointError
from kraken.serving.version import ModelVersion

__all__ = ["REQUEST", "DirectoryTransport", "read_layout", "request_snapshot", "scan_versions",
           "shard_dir", "write_layout"]

LAYOUT = "layout.kdat"
_LAYOUT_KIND = "kraken.model_layout"

REQUEST = "SNAPSHOT_REQUEST"
_NAME = re.compile(r"^(delta|snapshot)-(\d{12})\.kdat$")


def scan_versions(model_dir: str | os.PathLike[str]) -> tuple[dict[int, Path], dict[int, Path]]:
    """``(deltas, snapshots)``: version -> file, of the complete files in ``model_dir``."""
    deltas: dict[int, Path] = {}
    snapshots: dict[int, Path] = {}
    folder = Path(model_dir) / "versions"
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return deltas, snapshots
    for e in entries:
        m = _NAME.match(e.name)
        if m:
            (deltas if m.group(1) == "delta" else snapshots)[int(m.group(2))] = Path(e.path)
    return deltas, snapshots


def shard_dir(model_dir: str | os.PathLike[str], index: int) -> Path:
    """The folder of shard ``index``'s row versions inside ``model_dir``."""
    return Path(model_dir) / "shards" / f"shard-{int(index):04d}"


def write_layout(model_dir: str | os.PathLike[str], shards: int) -> None:
    """Record (atomically) that ``shards`` shard streams publish the rows of ``model_dir``
    (0: the trainer's versions carry them). Written only when it changes, and with 0
    only over a file saying otherwise (a directory that never had shards gets no file)."""
    exists = (Path(model_dir) / LAYOUT).exists()
    if (exists or shards) and (not exists or read_layout(model_dir) != shards):
        write_arrays(Path(model_dir) / LAYOUT, {"kind": _LAYOUT_KIND, "shards": int(shards)},
                     {})


def read_layout(model_dir: str | os.PathLike[str]) -> int:
    """How many shard streams publish the rows of ``model_dir`` (0 if none, or no layout
    file). Raises :class:`CorruptCheckpointError` for a file that is not a layout."""
    path = Path(model_dir) / LAYOUT
    try:
        meta, _ = read_arrays(path)
    except FileNotFoundError:
        return 0
    shards = meta.get("shards")
    if meta.get("kind") != _LAYOUT_KIND or not isinstance(shards, int) or shards < 0:
        raise CorruptCheckpointError(f"{path}: not a model layout")
    return shards


def request_snapshot(model_dir: str | os.PathLike[str]) -> None:
    """Ask the publisher of ``model_dir`` for a full snapshot at its next publication."""
    path = Path(model_dir) / REQUEST
    try:
        path.touch()
    except OSError:  # a read-only share: the periodic snapshot heals the gap instead
        pass


class DirectoryTransport:
    """Publishes versions as files under ``model_dir`` (see the module docstring)."""

    def __init__(self, model_dir: str | os.PathLike[str], *, keep_snapshots: int = 2) -> None:
        self.model_dir = Path(model_dir)
        self.keep_snapshots = max(1, int(keep_snapshots))
        (self.model_dir / "versions").mkdir(parents=True, exist_ok=True)

    def latest_version(self) -> int:
        """The highest version already in the directory (0 if none)."""
        deltas, snapshots = scan_versions(self.model_dir)
        return max([0, *deltas, *snapshots])

    def wants_snapshot(self) -> bool:
        return (self.model_dir / REQUEST).exists()

    def send(self, version: ModelVersion) -> None:
        if version.is_snapshot and version.shard is None:
            write_layout(self.model_dir, version.shards)
        version.write(self.model_dir / "versions" / version.filename())
        if version.is_snapshot:
            try:
                (self.model_dir / REQUEST).unlink()
            except FileNotFoundError:
                pass
            self._prune()

    def close(self) -> None:
        pass

    def _prune(self) -> None:
        deltas, snapshots = scan_versions(self.model_dir)
        kept = sorted(snapshots)[-self.keep_snapshots:]
        for v, path in list(snapshots.items()) + list(deltas.items()):
            old = v < kept[0] if path.name.startswith("snapshot") else v <= kept[0]
            if old:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
