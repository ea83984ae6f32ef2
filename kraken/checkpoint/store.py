"""Writing and finding checkpoints; atomic at the directory level.

A checkpoint is written under a temporary name, every file fsynced, the manifest
written last, then the directory is renamed into place and ``LATEST`` replaced
atomically. A crash at any point leaves either the previous checkpoint as latest
or the new one complete; never a half-written one that a reader would take.

Incremental checkpoints (``full_every > 1``): a full checkpoint, then up to
``full_every - 1`` checkpoints whose tables hold only the rows changed (and the keys
evicted) since the checkpoint before, each naming its chain in its manifest. An
incremental save follows only the checkpoint this store last wrote or restored into
the same PS, so a chain always describes the PS's own history. Every checkpoint stays a
complete restore point: pruning keeps every checkpoint a kept one builds on.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kraken.arrayfile import read_arrays, write_arrays
from kraken.checkpoint.manifest import MANIFEST, Manifest
from kraken.config import check_int
from kraken.errors import CheckpointError, CorruptCheckpointError
from kraken.ps.protocol import ParameterServer

__all__ = ["CheckpointStore"]

_PREFIX = "ckpt-"
_UNSHARDED = {"router": {"buckets": 1, "bucket_to_shard": [0]}, "shards": [{"dir": "."}]}
"""The layout of checkpoints written before sharding: one directory of table files."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """Checkpoints under ``root``; keeps the newest ``keep`` (and what they build on).

    ``full_every``: every how many checkpoints one is full (1: all of them).
    """

    def __init__(self, root: str | os.PathLike[str], keep: int = 3,
                 full_every: int = 1) -> None:
        check_int("checkpoint.keep", keep, lo=1)
        check_int("checkpoint.full_every", full_every, lo=1)
        self.root = Path(root)
        self.keep = keep
        self.full_every = full_every
        self._last: tuple[str, Manifest] | None = None
        """The checkpoint last written or restored here, the base of an incremental save."""

    def save(self, *, step: int, samples: int, stream_offset: int, ps: ParameterServer,
             parts: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> Path:
        """Write a checkpoint of ``ps`` plus named array ``parts``; returns its directory.

        Prepare, then commit: every shard writes its slice under ``tables/`` and reports
        its files; only when all did are the parts and the manifest (with the shard
        layout) written and the directory renamed into place. A shard that fails fails
        the checkpoint, and the previous one stays the latest.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{_PREFIX}{step:012d}"
        final = self.root / name
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        base = self._base(name)
        try:
            if base is None:
                layout = ps.save(tmp / "tables")
            else:
                layout = ps.save(tmp / "tables", base=base[1].ps)
            chain = [*base[1].chain, base[0]] if base is not None and \
                layout.get("incremental") else []
            for part, arrays in parts.items():
                write_arrays(tmp / f"{part}.kdat", {"part": part}, arrays)
            files = {str(p.relative_to(tmp)): p.stat().st_size
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            Manifest(step=step, samples=samples, stream_offset=stream_offset, files=files,
                     meta=meta, created=time.time(), ps=layout, chain=chain).write(tmp)
            _fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        latest_tmp = self.root / ".LATEST.tmp"
        latest_tmp.write_text(name)
        os.replace(latest_tmp, self.root / "LATEST")
        _fsync_dir(self.root)
        self._last = (name, Manifest.read(final))
        self._prune()
        return final

    def _base(self, name: str) -> tuple[str, Manifest] | None:
        """The checkpoint an incremental save named ``name`` would follow, or None for a
        full save. A save that replaces the checkpoint it would follow (the same step
        saved again) follows that one's base instead."""
        if self.full_every == 1 or self._last is None:
            return None
        if self._last[0] == name:
            chain = self._last[1].chain
            if not chain:
                return None
            try:
                self._last = (chain[-1], Manifest.read(self.root / chain[-1]))
            except CheckpointError:
                return None
        name, m = self._last
        if m.ps is None or len(m.chain) + 1 >= self.full_every or \
                not (self.root / name / MANIFEST).is_file():
            return None
        return self._last

    def _complete(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{_PREFIX}*")
                      if p.is_dir() and (p / MANIFEST).is_file())

    def _prune(self) -> None:
        """Delete all but the newest ``keep`` checkpoints and the ones they build on."""
        done = self._complete()
        needed = {p.name for p in done[-self.keep:]}
        for p in done[-self.keep:]:
            try:
                needed.update(Manifest.read(p).chain)
            except CheckpointError:
                continue
        for old in done[: -self.keep]:
            if old.name not in needed:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (``LATEST`` first, then a scan), or None."""
        if not self.root.is_dir():
            return None
        pointer = self.root / "LATEST"
        if pointer.is_file():
            cand = self.root / pointer.read_text().strip()
            if (cand / MANIFEST).is_file():
                return cand
        done = self._complete()
        return done[-1] if done else None

    def checkpoints(self) -> list[Path]:
        """Every complete checkpoint directory, oldest first (intact or not)."""
        return self._complete() if self.root.is_dir() else []

    def find(self, ref: str | os.PathLike[str]) -> Path:
        """The checkpoint ``ref`` names: a directory, a name under ``root``
        (``ckpt-000000000042``) or a step (``42``); :class:`CheckpointError` otherwise."""
        text = os.fspath(ref)
        cands = [Path(text), self.root / text]
        if text.isdigit():
            cands.append(self.root / f"{_PREFIX}{int(text):012d}")
        for cand in cands:
            if (cand / MANIFEST).is_file():
                return cand
        names = [p.name for p in self.checkpoints()]
        raise CheckpointError(f"no checkpoint {text!r} in {self.root}; there are "
                              f"{names if names else 'none'}")

    def intact(self) -> list[Path]:
        """The checkpoints whose manifest and files check out, oldest first."""
        out = []
        for p in self.checkpoints():
            try:
                for name in Manifest.read(p).chain:  # what it builds on must be intact too
                    Manifest.read(self.root / name)
            except CorruptCheckpointError:
                continue
            out.append(p)
        return out

    @staticmethod
    def open(directory: Path) -> Manifest:
        """Validate a checkpoint directory and return its manifest."""
        return Manifest.read(directory)

    def load_tables(self, directory: Path, ps: ParameterServer) -> None:
        """Restore every shard of ``ps`` from the checkpoint, whatever its shard count;
        an incremental checkpoint through its chain (every manifest in it is checked)."""
        m = Manifest.read(directory)
        layout = m.ps or _UNSHARDED
        if not m.chain:
            ps.load(directory / "tables", layout, checkpoint=directory.name)
        else:
            steps = [(directory.parent / name, Manifest.read(directory.parent / name))
                     for name in m.chain]
            full_dir, full = steps[0]
            if full.chain or full.ps is None:
                raise CorruptCheckpointError(f"{directory}: its chain starts at {full_dir.name}, "
                                             "which is not a full checkpoint")
            deltas = [(d / "tables", sm.ps) for d, sm in steps[1:]]
            deltas.append((directory / "tables", layout))
            ps.load(full_dir / "tables", full.ps, checkpoint=directory.name, deltas=deltas)
        self._last = (directory.name, m) if directory.parent.resolve() == \
            self.root.resolve() else None

    @staticmethod
    def load_part(directory: Path, part: str) -> dict[str, np.ndarray]:
        path = directory / f"{part}.kdat"
        if not path.is_file():
            raise CheckpointError(f"{directory}: no part {part!r}")
        return read_arrays(path)[1]
