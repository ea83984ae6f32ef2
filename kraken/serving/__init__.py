"""Real-time serving: a weights-only replica that follows the trainer within seconds.

Trainer side: a :class:`Publisher` (passed to the :class:`~kraken.train.Trainer`) publishes
versions of the model (row deltas every second, dense weights every minute, full
snapshots) through a transport: a model directory (:class:`DirectoryTransport`, the
default) or a gRPC push to servers (:class:`kraken.serving.push.PushTransport`, needs
``grpcio``). Server side: a :class:`Replica` (weights only, optionally 16-bit or 8-bit
row-wise quantized: :class:`WeightFormat`) kept current
by a :class:`DirectoryFollower` (or a :class:`kraken.serving.push.PushReceiver`).
With tables on parameter-server shards, each shard may publish its own rows
(:class:`ShardPublisher`, ``kraken ps --publish``) while the trainer's publisher sends only
the dense weights (``Publisher(..., rows=False)``); a replica then follows a version vector.
Replicas answer ``POST /v1/predict`` through the FastAPI app of :func:`create_app`
(``kraken serve --model-dir DIR --follow``).
"""

from kraken.serving.directory import DirectoryTransport, scan_versions
from kraken.serving.publisher import FanoutTransport, Publisher, Transport
from kraken.serving.replica import Prediction, Replica, ReplicaInfo, ShardState
from kraken.serving.shard_publisher import ShardPublisher
from kraken.serving.spec import ModelSpec
from kraken.serving.store import StoreTable, WeightFormat, WeightStore
from kraken.serving.sync import DirectoryFollower
from kraken.serving.version import ModelVersion, TableUpdate

__all__ = ["DirectoryFollower", "DirectoryTransport", "FanoutTransport", "ModelSpec",
           "ModelVersion", "Prediction", "Publisher", "Replica", "ReplicaInfo",
           "ShardPublisher", "ShardState", "StoreTable", "TableUpdate", "Transport",
           "WeightFormat", "WeightStore", "create_app", "scan_versions"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # FastAPI is imported only when the HTTP API is used
        from kraken.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'kraken.serving' has no attribute {name!r}")
