"""Data streams: columnar batches of feature IDs, from files or generated.

Every stream has a ``schema``, the ``features`` spec of its raw values (for serving),
``batches(batch_size, start=0)`` yielding :class:`Batch` objects whose ``offset``
resumes the stream exactly, and a ``skipped`` count of malformed records (see
:class:`Stream`). This layer uses
numpy and pandas only.
"""

from kraken.data.avazu import AvazuStream
from kraken.data.base import Batch, Jagged, LogStream, Schema, Stream, validate_batch
from kraken.data.criteo import CriteoStream
from kraken.data.features import DenseTransform, FeatureKind, FeatureSpec
from kraken.data.featurize import check_records, featurize
from kraken.data.hashing import feature_ids
from kraken.data.join import JoinConfig, Joiner
from kraken.data.movielens import MovieLensStream
from kraken.data.registry import STREAM_NAMES, open_stream
from kraken.data.synthetic import SyntheticConfig, SyntheticStream
from kraken.data.tabular import TabularSchema, TabularStream

__all__ = [
    "STREAM_NAMES",
    "AvazuStream",
    "Batch",
    "CriteoStream",
    "DenseTransform",
    "FeatureKind",
    "FeatureSpec",
    "Jagged",
    "JoinConfig",
    "Joiner",
    "LogStream",
    "MovieLensStream",
    "Schema",
    "Stream",
    "SyntheticConfig",
    "SyntheticStream",
    "TabularSchema",
    "TabularStream",
    "check_records",
    "feature_ids",
    "featurize",
    "open_stream",
    "validate_batch",
]
