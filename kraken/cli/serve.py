"""``kraken serve --model-dir DIR [--follow]`` or ``--push-port PORT``: the prediction server.

Loads the newest snapshot published in ``DIR`` and the deltas after it, then serves
``POST /v1/predict`` (see :mod:`kraken.serving.app`) on 127.0.0.1 by default. With
``--follow`` it keeps applying new versions as the trainer publishes them; without it the
model stays at the version found at start (it waits for a first snapshot if none). With
``--push-port`` it receives versions pushed over gRPC by ``kraken train --push HOST:PORT``
instead (listening on ``--host`` too).

The push channel binds loopback unless ``--host`` says otherwise, and then needs
``--token-file`` (every push must carry that token; others are refused with
UNAUTHENTICATED); ``--tls-cert``/``--tls-key`` put it under gRPC's TLS.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from kraken.errors import ConfigError
from kraken.serving import DirectoryFollower, Replica

DEFAULT_MAX_BODY_BYTES = 4 << 20  # as kraken.serving.app, imported lazily (FastAPI)
DEFAULT_MAX_INSTANCES = 4096


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve predictions from a model directory",
        description="Serve predictions from a model directory (--model-dir) or from "
                    "versions pushed over gRPC (--push-port). The push channel binds "
                    "--host, 127.0.0.1 by default; any other address needs --token-file "
                    "(pushes without the token are refused with UNAUTHENTICATED and "
                    "logged); --tls-cert/--tls-key add gRPC TLS. The trainer side is "
                    "`kraken train --push HOST:PORT --push-token-file F [--push-tls-cert C]`. "
                    "See docs/distributed.md, Security.")
    p.add_argument("--model-dir", default=None, help="where the trainer publishes versions")
    p.add_argument("--follow", action="store_true",
                   help="keep applying new versions as they are published")
    p.add_argument("--push-port", type=_port, default=None,
                   help="receive versions pushed over gRPC on this port instead (0: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="port (0: a free one; default 8080)")
    p.add_argument("--precision", default="int8",
                   choices=["auto", "fp32", "fp16", "bf16", "int8"],
                   help="weight storage (default int8: 8-bit row-wise quantized, tables "
                        "of dim <= 4 in fp16; auto: as in training, scores bit for bit "
                        "the trainer's)")
    p.add_argument("--poll-interval", type=float, default=0.05,
                   help="seconds between scans of the model directory")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES)
    p.add_argument("--threads", type=int, default=1, help="torch threads per request")
    p.add_argument("--token-file", default=None,
                   help="file holding the shared token every push must carry "
                        "(required when --host is not loopback)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate: the push channel uses TLS")
    p.add_argument("--tls-key", default=None, help="PEM key of --tls-cert")
    p.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {port}")
    return port


class _FirstModelOnly(threading.Thread):
    """Without --follow: poll until the first model is loaded, then stop."""

    def __init__(self, follower: DirectoryFollower) -> None:
        super().__init__(name="kraken-first-model", daemon=True)
        self.follower = follower
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.follower.poll()
            if self.follower.replica.ready:
                return
            self.done.wait(self.follower.poll_interval)


def run(args: argparse.Namespace) -> int:
    import torch  # noqa: PLC0415 - keep `kraken --help` and other commands light

    from kraken.serving.app import create_app  # noqa: PLC0415

    if (args.model_dir is None) == (args.push_port is None):
        raise ConfigError("give exactly one of --model-dir DIR or --push-port PORT")
    if args.push_port is None and (args.token_file or args.tls_cert or args.tls_key):
        raise ConfigError("--token-file/--tls-cert/--tls-key protect the push channel: "
                          "they need --push-port")
    torch.set_num_threads(max(1, args.threads))
    replica = Replica(precision=None if args.precision == "auto" else args.precision)
    if args.push_port is not None:
        return _serve_push(args, replica)
    follower = DirectoryFollower(replica, args.model_dir, poll_interval=args.poll_interval)
    follower.poll()

    def status() -> dict[str, Any]:
        return {"following": args.follow, "model_dir": str(args.model_dir),
                "gaps": follower.gaps, "shard_gaps": follower.shard_gaps,
                "errors": follower.errors,
                "last_error": follower.last_error}

    app = create_app(replica, sync_status=status, max_body_bytes=args.max_body_bytes,
                     max_instances=args.max_instances)
    server = _http(app, args)
    background: Any = follower.start() if args.follow else _FirstModelOnly(follower)
    if not args.follow:
        background.start()
    state = f"version {replica.version}" if replica.ready else "waiting for a first snapshot"
    print(f"kraken serve: {server.url} (model dir {args.model_dir}, "
          f"{'following' if args.follow else 'fixed'}; {state})", flush=True)
    try:
        _run_until_signalled(server)
    finally:
        if args.follow:
            follower.stop()
        else:
            background.done.set()
    print("kraken serve: stopped", file=sys.stderr)
    return 0


def _http(app: Any, args: argparse.Namespace) -> Any:
    from kraken.serving.http import HttpServer  # noqa: PLC0415

    try:
        return HttpServer(app, args.host, args.port, log_level="warning")
    except OSError as exc:
        raise ConfigError(f"--host/--port: cannot listen on {args.host}:{args.port}: {exc}"
                          ) from exc


def _run_until_signalled(server: Any) -> None:
    # uvicorn handles SIGINT/SIGTERM (graceful shutdown) and re-raises them afterwards:
    # with these handlers in place the re-raise only asks for the exit again (status 0)

    def stop(*_: Any) -> None:
        server.server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    server.run()


def _serve_push(args: argparse.Namespace, replica: Replica) -> int:
    from kraken.ps.wire import Security  # noqa: PLC0415 - imports grpc
    from kraken.serving.app import create_app  # noqa: PLC0415
    from kraken.serving.push import serve_push  # noqa: PLC0415

    security = Security.from_files(args.token_file, args.tls_cert, args.tls_key)
    security.check_bind(args.host)
    try:
        grpc_server, receiver = serve_push(replica, args.host, args.push_port,
                                           security=security)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"--push-port: cannot listen on {args.host}:{args.push_port}: "
                          f"{exc}") from exc
    app = create_app(replica, sync_status=lambda: {**receiver.sync_status(),
                                                   "push_address": grpc_server.address},
                     max_body_bytes=args.max_body_bytes, max_instances=args.max_instances)
    server = _http(app, args)
    print(f"kraken serve: {server.url} (receiving pushes on {grpc_server.address}; "
          f"waiting for a first snapshot)", flush=True)
    try:
        _run_until_signalled(server)
    finally:
        grpc_server.stop()
    print("kraken serve: stopped", file=sys.stderr)
    return 0
