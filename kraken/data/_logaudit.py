"""The log source's audit trail: evidence for crash drills (``[log] audit``).

Off by default; the source writes a line per batch yielded, so it is for drills and
debugging, not for production throughput.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np

__all__ = ["Audit"]


class Audit:
    """A crash drill's evidence, one file per process under ``directory``:

    ``Y <rid>:<kind> ...`` request id and SampleKind (0 negative, 1 positive, 2 correction)
                           of every sample of a batch, when yielded (it may not be
                           trained yet)
    ``P <token> <n> <t>``  position ``n`` of this process was handed out (every batch
                           yielded before it was trained: the trainer drains first)
    ``S <token> <n> <t>``  this process resumed from position ``n`` of process ``token``
    ``C <token> <n> <t>``  position ``n`` was committed

    (``<t>``: unix time of the line).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.file = (directory / f"{self.token}.log").open("a", buffering=1)
        self.n = 0

    def yielded(self, rid: np.ndarray, kind: np.ndarray) -> None:
        """A batch of samples ``rid uint64[B]`` of kinds ``kind int8[B]`` was yielded."""
        self.file.write("Y " + " ".join(f"{int(r)}:{int(k)}" for r, k in
                                         zip(rid, kind, strict=True)) + "\n")

    def position(self) -> dict[str, np.ndarray]:
        self.n += 1
        self.file.write(f"P {self.token} {self.n} {time.time():.3f}\n")
        return {"audit.token": np.frombuffer(self.token.encode(), dtype=np.uint8).copy(),
                "audit.n": np.array([self.n], dtype=np.int64)}

    def _tag(self, state: dict[str, np.ndarray]) -> str:
        if "audit.token" not in state:
            return "- 0"
        return f"{bytes(state['audit.token']).decode()} {int(state['audit.n'][0])}"

    def seek(self, state: dict[str, np.ndarray]) -> None:
        self.file.write(f"S {self._tag(state)} {time.time():.3f}\n")

    def commit(self, state: dict[str, np.ndarray]) -> None:
        self.file.write(f"C {self._tag(state)} {time.time():.3f}\n")
