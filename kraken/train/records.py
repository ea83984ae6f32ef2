"""The run's record log: ``metrics.jsonl`` (one JSON object per line) and a live callback.

Records are dicts with ``kind`` in ``progress | window | final``; see
:meth:`kraken.train.Trainer.run` for their keys. The file is opened in append mode (a
resumed run continues it) and flushed after every record; use the log as a context
manager so it is closed on every path out of a run, exceptions included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["RecordLog"]


class RecordLog:
    """Appends records to ``path`` (None: no file) and passes each to ``on_record``."""

    def __init__(self, path: Path | None,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.on_record = on_record
        self._file: IO[str] | None = None

    def __enter__(self) -> RecordLog:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")  # noqa: SIM115 - closed by __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._file is None

    def emit(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, default=_json_default) + "\n")
            self._file.flush()
        if self.on_record is not None:
            self.on_record(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")
