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
from kraken.errors import CheckpointError, CheckpointMismatchError, CorruptCheckpointError
from kraken.ps.protocol import ParameterServer
from kraken.table import TableConfig
from kraken.table.persistence import read_table_config

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

    @staticmethod
    def held_tables(directory: Path) -> dict[str, TableConfig]:
        """The tables checkpoint ``directory`` holds, name -> config as its parameter server
        held them (the first shard's slice: capacity is per shard, dim, precision and
        optimizer are every shard's), read from the table files' headers alone.

        Raises :class:`CorruptCheckpointError` for a damaged manifest, layout or header."""
        m = Manifest.read(directory)
        layout = m.ps or _UNSHARDED
        try:
            first = directory / "tables" / layout["shards"][0]["dir"]
        except (KeyError, IndexError, TypeError) as exc:
            raise CorruptCheckpointError(f"{directory}: unreadable shard layout: {exc!r}"
                                         ) from exc
        return {f.name[:-len(".ktab")]: read_table_config(f)
                for f in sorted(first.glob("*.ktab"))}

    def load_tables(self, directory: Path, ps: ParameterServer) -> None:
        """Restore every shard of ``ps`` from the checkpoint, whatever its shard count;
        an incremental checkpoint through its chain (every manifest in it is checked).

        Raises :class:`CheckpointMismatchError` before anything is loaded when the
        checkpoint holds other tables than ``ps`` (names, dims, precision, optimizer), e.g.
        first-order weights in a table of their own against segment rows."""
        m = Manifest.read(directory)
        check_held(directory, self.held_tables(directory), ps.tables)
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


def check_held(directory: Path, held: dict[str, TableConfig],
               mine: dict[str, TableConfig]) -> None:
    """Raise :class:`CheckpointMismatchError` naming both sides unless the tables a
    checkpoint holds are the tables ``mine`` (same names; same dim, precision, optimizer)."""
    if set(held) != set(mine):
        hint = ""
        if "wide" in held and "wide" not in mine and "emb" in held and "emb" in mine:
            hint = ("; the checkpoint keeps first-order weights in a table of their own "
                    "(model.wide = 'table'), this run in the rows of emb ('segment')")
        elif "wide" in mine and "wide" not in held and "emb" in held and "emb" in mine:
            hint = ("; the checkpoint keeps first-order weights in the rows of emb "
                    "(model.wide = 'segment'), this run in a table of their own ('table')")
        raise CheckpointMismatchError(f"{directory}: the checkpoint holds tables "
                                      f"{_describe(held)}, this run {_describe(mine)}{hint}")
    for name in sorted(held):
        a, b = held[name], mine[name]
        for what, theirs, ours in (("dim", a.dim, b.dim),
                                   ("precision", a.precision.value, b.precision.value),
                                   ("optimizer", a.optimizer.kind, b.optimizer.kind)):
            if theirs != ours:
                raise CheckpointMismatchError(
                    f"{directory}: table {name!r} has {what} {theirs!r} in the checkpoint, "
                    f"{ours!r} in this run")


def _describe(tables: dict[str, TableConfig]) -> str:
    return ", ".join(f"{n} (dim {t.dim}, {t.precision.value}, {t.optimizer.kind})"
                     for n, t in sorted(tables.items())) or "none"
