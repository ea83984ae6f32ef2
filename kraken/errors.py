"""The one exception tree of Kraken.

Every error raised at the library surface derives from :class:`KrakenError`;
lower-layer errors (``OSError``, ``ValueError`` from numpy, ...) are mapped at
the boundary with ``raise SpecificError(msg) from exc``::

    KrakenError
    ├── ConfigError                 a config value is wrong (message names its path)
    ├── InputError                  a verb got bad arguments; nothing was changed
    │   ├── ShapeError              wrong ndim / shape / length mismatch
    │   ├── DTypeError              wrong dtype (never silently converted)
    │   └── NonFiniteError          NaN or inf where finite numbers are required
    ├── CheckpointError             a saved file cannot be used; nothing was changed
    │   ├── CorruptCheckpointError  bad magic, truncated, checksum mismatch
    │   ├── CheckpointVersionError  written by an unknown format version
    │   └── CheckpointMismatchError file is valid but does not fit this table
    ├── CapacityError               an explicit insert does not fit the table's hard budget
    ├── TrainingDivergedError       training kept producing non-finite losses or gradients
    ├── DataError                   a data file cannot be read as the format it is opened as
    ├── StaleVersionError           a delta was asked for a version no longer retained
    ├── VersionGapError             a serving update does not follow the replica's version
    ├── NotReadyError               a serving replica was asked to predict before a model loaded
    ├── LifecycleError              a service was started twice or stopped while starting
    └── TransportError              a call to another process failed (also a ConnectionError)

Every subclass that is about a value also derives from ``ValueError`` (and
``LifecycleError`` from ``RuntimeError``) so that generic callers that catch those keep
working.
"""

from __future__ import annotations

__all__ = [
    "CapacityError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointVersionError",
    "ConfigError",
    "CorruptCheckpointError",
    "DTypeError",
    "DataError",
    "InputError",
    "KrakenError",
    "LifecycleError",
    "NonFiniteError",
    "NotReadyError",
    "ShapeError",
    "StaleVersionError",
    "TrainingDivergedError",
    "TransportError",
    "VersionGapError",
]


class KrakenError(Exception):
    """Base class of every error Kraken raises on purpose."""


class ConfigError(KrakenError, ValueError):
    """A configuration value is invalid. The message names the key's path."""


class InputError(KrakenError, ValueError):
    """A verb received invalid arguments; the callee's state is unchanged."""


class ShapeError(InputError):
    """An array has the wrong number of dimensions, shape or length."""


class DTypeError(InputError):
    """An array has the wrong dtype. Kraken never downcasts silently."""


class NonFiniteError(InputError):
    """An array holds NaN or inf where finite values are required."""


class CheckpointError(KrakenError):
    """A saved file cannot be used. The object being loaded is unchanged."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """Bad magic bytes, a truncated file, or a checksum mismatch."""


class CheckpointVersionError(CheckpointError, ValueError):
    """The file was written with a format version this build cannot read."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The file is intact but does not fit the target (dim, optimizer, precision)."""


class CapacityError(KrakenError):
    """``assign`` or ``load`` needs more rows than the table's capacity allows."""


class DataError(KrakenError, ValueError):
    """A data file is missing, unreadable or not in the expected format as a whole.

    The message names the file. A single malformed record is not an error: it is
    skipped and reported as one log line (logger ``kraken.data``).
    """


class TrainingDivergedError(KrakenError):
    """Many batches in a row produced NaN or inf losses or gradients."""


class StaleVersionError(KrakenError, ValueError):
    """A delta was requested from a version older than what is still retained.

    The consumer must resynchronise from a full snapshot.
    """


class VersionGapError(KrakenError, ValueError):
    """A model update's base is not the serving replica's version (a gap or a replay).

    The replica is unchanged; it must bootstrap from a full snapshot.
    """


class NotReadyError(KrakenError):
    """A serving replica has no model yet (no snapshot was loaded)."""


class LifecycleError(KrakenError, RuntimeError):
    """A service (a follower, an HTTP server) was started twice, or its background thread
    stopped before it was up. The message says which."""


class TransportError(KrakenError, ConnectionError):
    """A call to another process (gRPC) failed: peer down, timed out, or it raised."""
