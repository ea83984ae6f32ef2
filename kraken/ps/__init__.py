"""The parameter-server boundary: one protocol, in-process and sharded implementations.

- :class:`ParameterServer`: the verbs and their invariants (:mod:`kraken.ps.protocol`).
- :class:`LocalPS`: every table in this process (the embedded default).
- :class:`ShardedPS`: tables split over shards by a :class:`Router`; shards in process
  (:meth:`ShardedPS.in_process`) or shard processes over gRPC (:func:`build_ps` with
  ``[ps] mode = "remote"``; ``kraken ps`` serves one shard).
"""

from kraken.ps.config import PSConfig, PSMode, build_ps
from kraken.ps.protocol import ParameterServer
from kraken.ps.router import Router
from kraken.ps.shard import Shard, shard_configs
from kraken.ps.sharded import LocalPS, ShardedPS

__all__ = ["LocalPS", "PSConfig", "PSMode", "ParameterServer", "Router", "Shard",
           "ShardedPS", "build_ps", "shard_configs"]
