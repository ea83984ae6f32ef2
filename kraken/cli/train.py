"""``kraken train --config FILE.toml``: continual training from a config file."""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kraken.checkpoint import CheckpointStore
from kraken.cli.progress import ProgressPrinter, summary_table
from kraken.cli.workers import block_tracer, restarted, worker_group
from kraken.errors import CheckpointError, ConfigError, CorruptCheckpointError
from kraken.ps import LocalPS
from kraken.serving import DirectoryTransport, FanoutTransport, ModelSpec, Publisher
from kraken.train.config import RunConfig, build_run, load_config
from kraken.train.group import WorkerGroup
from kraken.train.trainer import RunSummary, Trainer


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train continually on a stream described by a TOML config")
    p.add_argument("--config", required=True, help="the run's TOML file (see examples/)")
    p.add_argument("--run-dir", default=None,
                   help="where metrics.jsonl and checkpoints go (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--resume-from", default=None, metavar="CHECKPOINT",
                   help="continue from this checkpoint of the run directory: its directory, "
                        "its name (ckpt-000000000042) or its step (42)")
    p.add_argument("--max-samples", type=int, default=None, help="stop after this many samples")
    p.add_argument("--ps-shards", default=None, metavar="HOST:PORT,...",
                   help="train against these parameter-server shards (`kraken ps`), in "
                        "shard order; overrides [ps] shards")
    p.add_argument("--publish", default=None, metavar="MODEL_DIR",
                   help="publish versions for `kraken serve --model-dir MODEL_DIR --follow`")
    p.add_argument("--push", action="append", default=[], metavar="HOST:PORT",
                   help="push versions over gRPC to `kraken serve --push-port PORT` "
                        "(repeatable; with or without --publish)")
    p.add_argument("--push-token-file", default=None,
                   help="file holding the token of `kraken serve --token-file` (with --push)")
    p.add_argument("--push-tls-cert", default=None,
                   help="the servers' PEM certificate (or its CA): push over TLS")
    p.add_argument("--push-tls-server-name", default=None,
                   help="name the servers' certificate carries, if not the host dialled")
    p.add_argument("--sync-interval", type=float, default=1.0,
                   help="seconds between row deltas (with --publish / --push)")
    p.add_argument("--dense-sync-interval", type=float, default=60.0,
                   help="seconds between dense-weight syncs (with --publish / --push)")
    p.add_argument("--rows-from-shards", action="store_true",
                   help="the parameter-server shards publish the rows themselves (`kraken ps "
                        "--publish MODEL_DIR`): publish only the dense weights and the spec, "
                        "every --dense-sync-interval (needs remote shards)")
    p.add_argument("--ordered", action="store_true",
                   help="with several workers (torchrun): pull and push in rank order, so a "
                        "run is reproducible and a resumed run ends as an uninterrupted one "
                        "(2 W barriers per step)")
    p.add_argument("--trace-blocks", default=None, help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def train_and_report(config: RunConfig, run_dir: Path, *, resume: bool = False,
                     resume_from: str | None = None,
                     title: str = "kraken train", publish_dir: Path | None = None,
                     push: list[str] | None = None, sync_interval: float = 1.0,
                     dense_sync_interval: float = 60.0, publish_rows: bool = True,
                     progress_extra: Callable[[], str] | None = None,
                     summary_extra: Callable[[], list[tuple[str, str]]] | None = None,
                     auc_ceiling: Callable[[int], float] | None = None,
                     shards: list[str] | None = None,
                     push_security: Any = None,
                     group: WorkerGroup | None = None,
                     on_block: Callable[[int, int], None] | None = None,
                     ordered: bool = False,
                     on_trainer: Callable[[Trainer], None] | None = None,
                     ) -> RunSummary:
    """Build, (resume,) train with a live progress line and SIGINT/SIGTERM handling.

    ``resume`` continues from the newest checkpoint, ``resume_from`` from the one it names.
    ``auc_ceiling(samples)``, when given, is the best AUC any model could reach on the
    first ``samples`` records; the summary shows it beside the progressive AUC.
    With ``publish_dir`` the trainer publishes versions there for serving, with ``push``
    (``host:port`` of servers) it pushes them over gRPC; both may be given. ``shards``
    (``host:port`` of ``kraken ps`` shards) puts the tables there instead of in process.
    ``push_security`` (a :class:`kraken.ps.wire.Security`: token, TLS root) protects pushes.
    ``publish_rows=False``: the shards publish the rows (``kraken ps --publish``), the
    trainer only the dense weights.
    ``group``: this process is one of ``group.world`` workers (under torchrun): the tables
    must be on shards; rank 0 alone publishes and prints (see
    :class:`~kraken.train.distributed.DistributedTrainer`, which calls ``on_block``;
    ``ordered``: the workers call the shards in rank order).
    """
    lead = group is None or group.leader
    say = print if lead else _quiet
    checkpoint = resume_point(run_dir, resume, resume_from)
    built = build_run(config, shards, checkpoint=checkpoint)
    config = built.config  # every "auto" setting pinned, for this run and its checkpoints
    if group is not None and isinstance(built.ps, LocalPS):
        built.ps.close()
        raise ConfigError(f"{group.world} workers share one model only through parameter-"
                          "server shards: set [ps] mode = \"remote\" with shards, or use "
                          "`kraken launch --shards S --workers W`")
    if not publish_rows and isinstance(built.ps, LocalPS):
        raise ConfigError("--rows-from-shards: the tables are in this process; only shard "
                          "processes (`kraken ps --publish`) publish their own rows")
    publisher = None
    transports: list[Any] = [DirectoryTransport(publish_dir)] if publish_dir else []
    if push:
        from kraken.serving.push import PushTransport  # noqa: PLC0415 - imports grpc

        transports.append(PushTransport(push, security=push_security))
    if transports and lead:
        transport = transports[0] if len(transports) == 1 else FanoutTransport(transports)
        publisher = Publisher(built.ps, built.model, ModelSpec.from_run(built), transport,
                              sync_interval=sync_interval,
                              dense_sync_interval=dense_sync_interval, rows=publish_rows)
    parts: dict[str, Any] = dict(model=built.model, embedding=built.embedding, ps=built.ps,
                                 stream=built.stream, config=config.trainer, run_dir=run_dir,
                                 on_record=ProgressPrinter(extra=progress_extra),
                                 meta={"config": _jsonable(config)}, publisher=publisher)
    if group is None:
        trainer: Trainer = Trainer(**parts)
    else:
        from kraken.train.distributed import DistributedTrainer  # noqa: PLC0415 - torch.distributed

        trainer = DistributedTrainer(group=group, on_block=on_block, ordered=ordered,
                                     **parts)
    if resume or resume_from is not None:
        if _resume(trainer, resume_from):
            say(f"resumed at {trainer.samples:,} samples (stream offset {trainer.offset:,})")
        else:
            say("no checkpoint to resume from; starting fresh")
    if on_trainer is not None:
        on_trainer(trainer)

    def stop(signum: int, _frame: Any) -> None:
        trainer.request_stop(f"signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        say(f"{title}: model {config.model.name}, tables "
              + ", ".join(f"{n} (dim {t.dim}, {t.optimizer.kind}, cap {t.capacity:,})"
                          for n, t in config.ps_tables.items())
              + f", batch {config.trainer.batch_size}, run dir {run_dir}"
              + (f", {group.world} workers" if group is not None else ""))
        t0 = time.perf_counter()
        s = trainer.run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if publisher is not None:
            publisher.close()
        built.ps.close()
    if not lead:
        return s
    m = s.metrics
    rows = [("stopped", s.stopped), ("samples", f"{s.samples:,}"),
            ("wall time", f"{time.perf_counter() - t0:.1f}s"),
            ("samples/s", f"{s.samples / max(s.seconds, 1e-9):,.0f} (this process)"),
            ("progressive AUC", f"{m['auc']:.4f}" + (
                f" (ceiling {auc_ceiling(s.samples):.4f}: the stream's true model on the "
                f"same samples)" if auc_ceiling is not None else "")),
            ("logloss", f"{m['logloss']:.4f}"),
            ("calibration", f"{m['calibration']:.3f}")]
    for n, t in s.tables.items():
        rows.append((f"table {n}", f"{t['live_rows']:,} live, {t['admitted']:,} admitted, "
                                   f"{t['evicted']:,} evicted, {t['memory_bytes'] / 2**20:.1f} MB"))
    for w in getattr(trainer, "workers", []):  # several workers: each one's own figures
        rows.append((f"worker {w['rank']}", f"{w['samples']:,} samples, AUC {w['auc']:.4f}, "
                                            f"logloss {w['logloss']:.4f}"))
    rows.append(("skipped records", f"{s.skipped:,} malformed"))
    rows.append(("checkpoint", s.checkpoint or "-"))
    if publisher is not None:
        where = ", ".join([str(publish_dir)] * bool(publish_dir) + list(push or []))
        rows.append(("published", f"{publisher.published} versions to {where}, "
                                  f"last {publisher.version}"
                                  + (f", {publisher.errors} failed" if publisher.errors else "")))
    if summary_extra is not None:
        rows += summary_extra()
    print(summary_table(rows))
    return s


def resume_point(run_dir: Path, resume: bool, resume_from: str | None) -> Path | None:
    """The checkpoint a run in ``run_dir`` will resume from (``resume``: the newest one,
    ``resume_from``: the one it names), or None for a new run; its tables decide the
    config's ``"auto"`` settings (:meth:`~kraken.train.config.RunConfig.pinned`).

    A checkpoint that cannot be found or read is None here: resuming it then fails with
    its own error (and, for a damaged one, the hint of an intact one)."""
    if not (resume or resume_from is not None):
        return None
    store = CheckpointStore(run_dir / "checkpoints")
    try:
        path = store.latest() if resume_from is None else store.find(resume_from)
        if path is not None:
            store.held_tables(path)  # readable: what it holds decides
        return path
    except CheckpointError:
        return None


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """Workers other than rank 0 print nothing but errors."""


def _resume(trainer: Trainer, resume_from: str | None) -> bool:
    """Resume; when the checkpoint is damaged, say which older one is intact and how to
    resume from it."""
    try:
        return trainer.resume(resume_from)
    except CorruptCheckpointError as exc:
        store = trainer.store
        if store is None:
            raise
        bad = store.find(resume_from) if resume_from is not None else store.latest()
        older = [p for p in store.intact() if bad is None or p.name < bad.name]
        if older:
            hint = (f"the newest intact checkpoint before it is {older[-1]}; resume from it "
                    f"with --resume-from {older[-1].name}")
        else:
            hint = "no older intact checkpoint is left; start afresh without --resume"
        raise CorruptCheckpointError(f"{exc}\n{hint}") from exc


def _jsonable(config: RunConfig) -> dict[str, Any]:
    return {"data": config.data.to_dict(), "model": config.model.to_dict(),
            "tables": {n: t.to_dict() for n, t in config.tables.items()}}


def run(args: argparse.Namespace) -> int:
    overrides = {"trainer": {"max_samples": args.max_samples}} if args.max_samples else None
    config = load_config(args.config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
    push_security = None
    if args.push_token_file or args.push_tls_cert:
        from kraken.ps.wire import Security  # noqa: PLC0415 - imports grpc

        push_security = Security.from_files(args.push_token_file, args.push_tls_cert,
                                            tls_server_name=args.push_tls_server_name)
    with worker_group() as group:
        resume = args.resume or (group is not None and restarted())
        on_block = block_tracer(args.trace_blocks, group.rank if group is not None else 0)
        train_and_report(config, run_dir, resume=resume, resume_from=args.resume_from,
                         publish_dir=Path(args.publish) if args.publish else None,
                         push=args.push, sync_interval=args.sync_interval,
                         dense_sync_interval=args.dense_sync_interval,
                         publish_rows=not args.rows_from_shards,
                         shards=args.ps_shards.split(",") if args.ps_shards else None,
                         push_security=push_security, group=group, on_block=on_block,
                         ordered=args.ordered)
    return 0
