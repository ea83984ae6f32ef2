"""``kraken ps --config run.toml --shard I --of N --port P``: one parameter-server shard.

The shard holds its slice of every table of the run (each table's budget divided by
``N``) and serves it over gRPC until SIGINT/SIGTERM. It prints one line when it is
ready::

    kraken ps: shard 0 of 2 ready on 127.0.0.1:7100

It binds 127.0.0.1 unless ``--host`` says otherwise; any other address needs
``--token-file`` (and takes ``--tls-cert``/``--tls-key``).

With ``--publish MODEL_DIR`` the shard also publishes its own rows for serving, every
``--sync-interval`` seconds, under ``MODEL_DIR/shards/shard-<I>/`` (a snapshot at start
and every ``--snapshot-every`` deltas; see :mod:`kraken.serving.shard_publisher`); the
trainer then publishes only the dense weights (``kraken train --rows-from-shards``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from kraken.config import read_config_file
from kraken.errors import ConfigError
from kraken.ps.config import PSConfig
from kraken.ps.server import ShardServer
from kraken.ps.shard import Shard, shard_configs
from kraken.ps.wire import Security
from kraken.table import TableConfig
from kraken.table.segments import with_wide_column


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "ps", help="serve one parameter-server shard over gRPC",
        description="Serve one parameter-server shard over gRPC. It binds 127.0.0.1 unless "
                    "--host says otherwise; any other address needs --token-file (every "
                    "call must carry the token; others are refused with UNAUTHENTICATED "
                    "and logged) and --checkpoint-root. --tls-cert/--tls-key add gRPC TLS. "
                    "Requests are numeric arrays and JSON: nothing received is executed "
                    "or unpickled. See docs/distributed.md, Security.")
    p.add_argument("--config", required=True, help="the run's TOML file (tables and [ps])")
    p.add_argument("--shard", type=int, required=True, help="this shard's index I")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="the trainer will restore this shard from the newest checkpoint of "
                        "RUN_DIR (`kraken train --run-dir RUN_DIR --resume`): the config's "
                        "\"auto\" settings (model.wide, precision) keep what it holds, as "
                        "the trainer's do (kraken launch does this itself)")
    p.add_argument("--of", type=int, default=None,
                   help="number of shards N (default: len(ps.shards) of the config)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=0, help="port (0: a free one, printed)")
    p.add_argument("--workers", type=int, default=4, help="request handler threads")
    p.add_argument("--checkpoint-root", default=None,
                   help="the only directory Save/Load requests may touch "
                        "(required beyond loopback)")
    p.add_argument("--token-file", default=None,
                   help="file holding the shared token every call must carry (required "
                        "when --host is not loopback; default: ps.token_file)")
    p.add_argument("--tls-cert", default=None,
                   help="PEM certificate: serve over gRPC TLS (default: ps.tls_cert)")
    p.add_argument("--tls-key", default=None, help="PEM key of --tls-cert (default: ps.tls_key)")
    p.add_argument("--publish", default=None, metavar="MODEL_DIR",
                   help="publish this shard's rows for `kraken serve --model-dir MODEL_DIR "
                        "--follow` (the trainer publishes the dense weights with "
                        "`kraken train --publish MODEL_DIR --rows-from-shards`)")
    p.add_argument("--sync-interval", type=float, default=1.0,
                   help="seconds between row deltas (with --publish)")
    p.add_argument("--snapshot-every", type=int, default=300,
                   help="row deltas between two snapshots of this shard (with --publish; "
                        "0: only at start and when a server asks)")
    p.set_defaults(run=run)


def shard_tables(path: str, resume: str | None = None) -> tuple[dict[str, TableConfig], PSConfig]:
    """The tables and ``[ps]`` section a shard serves from a run file; ``resume``: the run
    directory whose newest checkpoint the shard will be restored from (it pins the
    config's ``"auto"`` settings, as :func:`kraken.cli.train.resume_point` does for the
    trainer).

    When the file lists every table with its precision and says where first-order weights
    live (``emb`` and ``wide`` tables, or ``model.wide = "segment"`` and no ``wide``
    table), as a pinned config does, only the tables (widened for segment rows) and
    ``[ps]`` are read and validated, without loading the model zoo (and torch); otherwise
    the whole run is validated to derive the model's tables, its ``"auto"`` settings
    resolved by the checkpoint of ``resume`` or as for a new run (``kraken launch`` writes
    its shards the config pinned by the checkpoint it resumes).
    """
    doc = read_config_file(path)
    raw = doc.get("tables")
    model = doc.get("model")
    wide = model.get("wide", "auto") if isinstance(model, dict) else "auto"
    listed = isinstance(raw, dict) and "emb" in raw and all(
        isinstance(t, dict) and t.get("precision", "auto") != "auto" for t in raw.values())
    if resume is None and listed and (wide == "segment") != ("wide" in raw):
        try:
            tables = {n: TableConfig.from_dict(t, f"tables.{n}") for n, t in raw.items()}
            if wide == "segment":  # the rows of emb carry the wide column
                tables["emb"] = with_wide_column(tables["emb"])
            return tables, PSConfig.from_dict(doc.get("ps", {}))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    from kraken.checkpoint import CheckpointStore  # noqa: PLC0415
    from kraken.cli.train import resume_point  # noqa: PLC0415
    from kraken.train.config import load_config  # noqa: PLC0415 - the model decides: torch

    config = load_config(path)
    checkpoint = resume_point(Path(resume), True, None) if resume is not None else None
    held = CheckpointStore.held_tables(checkpoint) if checkpoint is not None else None
    config = config.pinned(held)
    return config.ps_tables, config.ps


def serve_shard(args: argparse.Namespace, stop: threading.Event) -> int:
    tables, ps_cfg = shard_tables(args.config, args.resume)
    n = args.of if args.of is not None else len(ps_cfg.shards)
    if n < 1:
        raise ConfigError("--of: give the number of shards (the config lists no ps.shards)")
    sec = Security.from_files(args.token_file or ps_cfg.token_file,
                              args.tls_cert or ps_cfg.tls_cert, args.tls_key or ps_cfg.tls_key)
    shard = Shard(shard_configs(tables, n), index=args.shard, of=n,
                  evict_every=ps_cfg.evict_every)
    server = ShardServer(shard, host=args.host, port=args.port, workers=args.workers,
                         security=sec,
                         checkpoint_root=Path(args.checkpoint_root) if args.checkpoint_root
                         else None).start()
    publisher = None
    if args.publish:
        from kraken.serving.shard_publisher import ShardPublisher  # noqa: PLC0415 - torch

        publisher = ShardPublisher(shard, args.publish, sync_interval=args.sync_interval,
                                   snapshot_every=args.snapshot_every).start()
    print(f"kraken ps: shard {args.shard} of {n} ready on {server.address}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        if publisher is not None:
            publisher.stop()
    print(f"kraken ps: shard {args.shard} stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return serve_shard(args, stop)
    except BrokenPipeError:  # pragma: no cover - the launcher went away
        sys.stderr.close()
        return 1
