"""The ``[ps]`` section of a run: where the tables live and how workers reach them.

::

    [ps]
    mode = "remote"                       # "local": in this process (default)
    shards = ["10.0.0.5:7100", "10.0.0.6:7100"]   # remote: shard i at shards[i]
    buckets = 4096                        # virtual buckets (fixed for the life of a model)
    push_staleness = 1                    # pushes in flight when the next batch pulls
    background_push = false               # push returns at once; the next call waits
    evict_every = 10                      # pushes between a shard's eviction passes
    timeout_s = 30.0                      # per call; retries with backoff, then an error
    retries = 3
    token_file = "/etc/kraken/token"      # required when shards bind beyond loopback
    tls_cert = "/etc/kraken/shard.pem"    # optional: gRPC TLS (clients use it as root)
    tls_key = "/etc/kraken/shard.key"
    tls_server_name = "ps.internal"       # optional: the name the certificate carries,
                                          # when clients dial the shards by another
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from kraken.config import build_dataclass, check_int, check_positive
from kraken.errors import ConfigError
from kraken.ps.router import DEFAULT_BUCKETS, Router
from kraken.ps.sharded import LocalPS, ShardedPS
from kraken.ps.wire import Security
from kraken.table import TableConfig

__all__ = ["PSConfig", "PSMode", "build_ps"]


class PSMode(enum.Enum):
    LOCAL = "local"
    REMOTE = "remote"


@dataclasses.dataclass(frozen=True)
class PSConfig:
    """Validated ``[ps]`` section (see the module docstring)."""

    mode: PSMode = PSMode.LOCAL
    shards: tuple[str, ...] = ()
    buckets: int = DEFAULT_BUCKETS
    push_staleness: int = 0
    background_push: bool = False
    evict_every: int = 10
    timeout_s: float = 30.0
    retries: int = 3
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mode, PSMode):
            try:
                object.__setattr__(self, "mode", PSMode(self.mode))
            except ValueError:
                raise ConfigError(f"mode: expected one of {[m.value for m in PSMode]}, "
                                  f"got {self.mode!r}") from None
        shards = self.shards
        if isinstance(shards, str) or not all(isinstance(s, str) and ":" in s for s in shards):
            raise ConfigError(f"shards: expected a list of 'host:port', got {shards!r}")
        object.__setattr__(self, "shards", tuple(shards))
        if self.mode is PSMode.REMOTE and not self.shards:
            raise ConfigError("shards: mode 'remote' needs the shard addresses "
                              "(or start them with `kraken launch`)")
        check_int("buckets", self.buckets, lo=1, hi=1 << 20)
        if self.shards and len(self.shards) > self.buckets:
            raise ConfigError(f"buckets: {self.buckets} buckets cannot spread over "
                              f"{len(self.shards)} shards")
        check_int("push_staleness", self.push_staleness, lo=0, hi=64)
        if not isinstance(self.background_push, bool):
            raise ConfigError(f"background_push: expected true or false, "
                              f"got {self.background_push!r}")
        check_int("evict_every", self.evict_every, lo=0)
        check_positive("timeout_s", self.timeout_s)
        check_int("retries", self.retries, lo=0, hi=100)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, path: str = "ps") -> PSConfig:
        return build_dataclass(cls, dict(d or {}), path)  # type: ignore[no-any-return]

    def security(self) -> Security:
        return Security.from_files(self.token_file, self.tls_cert, self.tls_key,
                                   self.tls_server_name)


def build_ps(tables: Mapping[str, TableConfig], cfg: PSConfig,
             shards: list[str] | None = None) -> ShardedPS:
    """The parameter server a worker uses: in process, or the remote shards of ``cfg``
    (``shards`` overrides the addresses, e.g. those ``kraken launch`` just started)."""
    addresses = list(shards if shards is not None else cfg.shards)
    if cfg.mode is PSMode.LOCAL and shards is None:
        return LocalPS(tables, evict_every=cfg.evict_every,
                       background_push=cfg.background_push)
    from kraken.ps.client import RemoteShard  # grpc only when shards are remote

    sec = cfg.security()
    eps = [RemoteShard(a, index=i, timeout=cfg.timeout_s, retries=cfg.retries, security=sec)
           for i, a in enumerate(addresses)]
    try:
        ps = ShardedPS(eps, Router.uniform(len(eps), cfg.buckets),
                       push_staleness=cfg.push_staleness,
                       background_push=cfg.background_push)
    except BaseException:
        for e in eps:
            e.close()
        raise
    mine = {n: dataclasses.replace(c, capacity=1) for n, c in tables.items()}
    theirs = {n: dataclasses.replace(c, capacity=1) for n, c in ps.tables.items()}
    if mine != theirs:
        ps.close()
        raise ConfigError(f"tables: the shards at {addresses} serve other tables than this "
                          "config describes; start them from the same config")
    return ps
