"""Plumbing shared by the file-backed streams: ``skipped``, ``batches`` and the block loop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kraken.data._assemble import Part, check_batch_args, rebatch
from kraken.data._lines import LineBlock, MalformedReporter, TextFormat, check_file, read_blocks
from kraken.data.base import Batch

__all__ = ["FileStream"]


class FileStream:
    """Base of the line-oriented file streams.

    Subclasses set ``path``, ``_format``, ``_block_bytes`` (and ``_header_lines`` when the
    file has a header), create ``_reporter = self._new_reporter()``, and implement
    ``_parse(block, reporter) -> Part``. ``skipped`` counts the malformed records met by
    the latest ``batches`` iteration: it is 0 again as soon as ``batches`` is called.
    """

    path: Path
    _format: TextFormat
    _block_bytes: int
    _header_lines: int = 0
    _reporter: MalformedReporter

    def _new_reporter(self) -> MalformedReporter:
        return MalformedReporter(self.path, self._format.what, header_lines=self._header_lines)

    @property
    def skipped(self) -> int:
        return self._reporter.count

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``batch_size`` records from record ``start`` (the last may be short)."""
        check_batch_args(batch_size, start)
        check_file(self.path)
        self._reporter = self._new_reporter()  # a new iteration counts from 0 at once
        return rebatch(self._parts(start), batch_size)

    def _parts(self, start: int) -> Iterator[Part]:
        reporter = self._reporter = self._new_reporter()
        for block in read_blocks(self.path, self._format, header_lines=self._header_lines,
                                 start=start, block_bytes=self._block_bytes):
            yield self._parse(block, reporter)
        reporter.close()

    def _parse(self, block: LineBlock, reporter: MalformedReporter) -> Part:
        raise NotImplementedError
