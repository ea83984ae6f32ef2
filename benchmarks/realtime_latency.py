#!/usr/bin/env python
"""Event -> served-model latency of online training from a live event log.

    python benchmarks/realtime_latency.py --rates 10000 2000 --seconds 45 --repeats 3

For every rate and repeat, on this host (one clock for every timestamp below):

- a fresh ``redis-server`` (``RedisServer``: a temporary directory, append-only file
  with ``appendfsync always``);
- a producer process (``kraken.data.replay.replay`` of the endless synthetic stream, the
  schema of ``examples/realtime.toml``, handed over in pieces of a tenth of the join
  window as the demo does) writing ``rate`` entries per second, impressions and their
  delayed clicks together, for ``--seconds``;
- in this process, the trainer of ``examples/realtime.toml`` reading the log through
  ``RedisLogStream`` (join window ``--window-s`` of event time) and publishing a version
  (rows and dense weights) every ``--sync`` seconds into a model directory;
- a ``kraken serve --follow`` process applying those versions (polling every 20 ms).

When the producer stops, one action far ahead in event time (a ``flush``, counted as an
orphan) closes every join window, the trainer trains what is left and the run ends once
the server applied a version holding every sample.

What is measured, per event (each entry the producer wrote):

- its *log time*: the millisecond of its Redis entry id (the server's clock at XADD);
- the *sample* that carries it: for a click, the positive (or correction) sample the
  joiner emitted for its request id; for an impression, the first sample emitted for
  its request id (a positive when a click came within the window, else the negative
  emitted when the window closed: this one therefore includes the join window, which
  in wall-clock time is ``window_s`` divided by the event-time speed of the replay);
- the *version containing it*: the first published version whose publication followed
  the training of that sample (the trainer counts samples in the joiner's emission
  order, which is the order it trains them; ``Publisher(on_publish=...)`` records the
  count at each publication);
- its *served time*: the moment the server applied that version, or the first later
  one (``/v1/model`` history, ``applied_at``).

``click -> served`` = served time - log time of the click (the headline: how soon a
label reaches the served model); ``impression -> served`` likewise for impressions.
The producer starts once the server has applied the trainer's first (empty) version;
events of its first ``--warmup-s`` seconds are trained but not timed. Events whose
sample was never trained (clicks of forgotten impressions, the flush) are counted, not
timed. ``click -> published`` (the same, to the publication instead of the server's
apply) splits the trainer's part from the server's.

Also reported: the producer's sustained rate (entries over the span of their entry
ids), the trainer's samples/s over the producer's run, and, from the trainer's records
every 0.5 s after the warm-up, the consumer lag (entries written and not yet read,
seconds the oldest had waited: ``RedisLogStream.lag()``, as of the reader's last read)
and the samples decided by the joiner but not yet trained (the reader's buffer, which
the lag does not count). The JSON keeps that timeline. Each configuration runs
``--repeats`` times, the rates alternating within a repeat; the table shows medians with
[min, max]. Results are written to ``benchmarks/results/realtime-latency-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PREFIX = "bench"
FLUSH_RID = np.uint64(2**64 - 1)  # the closing action's request id; the replay's count from 0


def pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")


# -- the producer process ------------------------------------------------------------------


def produce(args: argparse.Namespace) -> None:
    """Replay the endless synthetic stream at ``--rate`` for ``--seconds`` (own process)."""
    import redis

    from kraken.cli.realtime import by_event_time
    from kraken.data import open_stream
    from kraken.data.raw import raw_chunks
    from kraken.data.replay import ReplayConfig, replay

    class Done(Exception):
        pass

    end = time.monotonic() + args.seconds

    def progress(_stats: Any) -> None:
        if time.monotonic() >= end:
            raise Done

    client = redis.Redis.from_url(args.url)
    stream = open_stream("synthetic", n_records=None, vocab=200_000)
    chunks = by_event_time(raw_chunks(stream), max(1, args.window_s // 10))  # as the demo
    try:
        replay(client, chunks, ReplayConfig(prefix=PREFIX, rate=args.rate),
               progress=progress)
    except Done:
        pass
    finally:
        client.close()


# -- one run ----------------------------------------------------------------------------------


def _run_doc(url: str, window_s: int, batch_size: int) -> dict[str, Any]:
    from kraken.cli.realtime import REALTIME_RUN

    doc = json.loads(json.dumps(REALTIME_RUN))
    doc["log"].update(url=url, prefix=PREFIX, window_s=window_s, block_ms=50)
    doc["trainer"].update(log_every_s=0.5, checkpoint_every_s=None, batch_size=batch_size)
    return doc


def _start_server(model_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "kraken.cli.main", "serve", "--model-dir",
                             str(model_dir), "--follow", "--port", "0", "--poll-interval",
                             "0.02"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("kraken serve: http://"):
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"server did not start: {line!r} {err}")
    return proc, line.split()[2]


def _history(url: str) -> list[tuple[int, float, float]]:
    import httpx

    return [tuple(h) for h in httpx.get(f"{url}/v1/model", timeout=30).json()["history"]]


def _entries(client: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ms int64[N], rid uint64[N])``: entry-id milliseconds and request ids of every
    entry of ``key``, in log order."""
    ms, rid = [], []
    start = "-"
    while True:
        got = client.xrange(key, start, "+", count=50_000)
        if start != "-":
            got = got[1:]
        if not got:
            break
        ms += [int(i.split(b"-")[0]) for i, _ in got]
        rid += [int(f[b"rid"]) for _, f in got]
        start = got[-1][0].decode()
    return np.array(ms, np.int64), np.array(rid, np.uint64)


def one_run(rate: float, args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import redis

    from kraken.data.join import Joiner, SampleKind
    from kraken.data.logconfig import LogConfig
    from kraken.data.redis_server import RedisServer
    from kraken.data.redislog import RedisLogStream
    from kraken.serving import ModelSpec, Publisher
    from kraken.train import Trainer
    from kraken.train.config import RunConfig, build_run

    class RecordingJoiner(Joiner):
        """Remembers the request id and kind of every sample, in emission order."""

        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            self.rids: list[np.ndarray] = []
            self.kinds: list[np.ndarray] = []
            self.n = 0

        def emit(self) -> Any:
            out = super().emit()
            if out is not None and len(out):
                self.rids.append(self.emitted_rid.copy())
                self.kinds.append(self.emitted_kind.copy())
                self.n += len(out)
            return out

    with tempfile.TemporaryDirectory(prefix="kraken-rt-bench-") as tmp:
        server = RedisServer(Path(tmp) / "redis").start()
        serve = None
        producer = None
        try:
            doc = _run_doc(server.url, args.window_s, args.batch_size)
            config = RunConfig.from_dict(doc)
            log = LogConfig.from_dict(doc["log"])
            built = build_run(config)
            joiner = RecordingJoiner(log.join_config())
            built = dataclasses.replace(built, stream=RedisLogStream(log, joiner))
            model_dir = Path(tmp) / "model"
            published: list[tuple[int, int, float]] = []  # (version, samples before, time)
            trainer_box: list[Any] = []
            pub = Publisher(built.ps, built.model, ModelSpec.from_run(built), model_dir,
                            sync_interval=args.sync, dense_sync_interval=args.sync,
                            on_publish=lambda v: published.append(
                                (v.version, trainer_box[0].samples if trainer_box else 0,
                                 v.publish_time)))
            lags: list[tuple[float, float, float, int, int]] = []
            # (time, lag entries, lag seconds, samples emitted not trained, trained)

            def on_record(rec: dict[str, Any]) -> None:
                if "lag" in rec:
                    lags.append((time.time(), rec["lag"]["entries"], rec["lag"]["seconds"],
                                 joiner.n - rec["samples"], rec["samples"]))

            trainer = Trainer(model=built.model, embedding=built.embedding, ps=built.ps,
                              stream=built.stream, config=config.trainer, publisher=pub,
                              on_record=on_record)
            trainer_box.append(trainer)
            failure: list[BaseException] = []

            def train() -> None:
                try:
                    trainer.run()
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failure.append(exc)

            serve, url = _start_server(model_dir)
            thread = threading.Thread(target=train, name="trainer", daemon=True)
            thread.start()
            applied: dict[int, float] = {}
            ready_by = time.time() + 120
            while not applied and time.time() < ready_by and not failure:  # trainer idle
                time.sleep(0.2)
                applied.update({v: a for v, _p, a in _history(url)})
            t_start = time.time()
            producer = subprocess.Popen([sys.executable, __file__, "_produce", "--url",
                                         server.url, "--rate", str(rate), "--seconds",
                                         str(args.seconds), "--window-s", str(args.window_s)],
                                        cwd=ROOT)
            while producer.poll() is None:
                time.sleep(1.0)
                applied.update({v: a for v, _p, a in _history(url)})
            t_produced = time.time()
            if producer.returncode != 0:
                raise RuntimeError(f"producer exited with {producer.returncode}")
            client = redis.Redis.from_url(server.url)
            newest = int(client.xrevrange(log.impressions_key(0), count=1)[0][1][b"ts"])
            client.xadd(log.actions_key(0), {"rid": str(FLUSH_RID), "type": "click",
                                             "ts": str(newest + 10 * args.window_s)})
            deadline = time.time() + args.drain_s
            while time.time() < deadline and not failure:  # every sample trained and served
                time.sleep(0.5)
                applied.update({v: a for v, _p, a in _history(url)})
                done = [v for v, s, _ in list(published)
                        if s >= joiner.n and s == trainer.samples]
                if trainer.samples == joiner.n and done and max(done) <= max(applied, default=0) \
                        and trainer.log.lag()["entries"] == 0:
                    break
            trainer.request_stop("benchmark done")
            thread.join(timeout=60)
            if failure:
                raise failure[0]
            imp_ms, imp_rid = _entries(client, log.impressions_key(0))
            act_ms, act_rid = _entries(client, log.actions_key(0))
            client.close()
        finally:
            if producer is not None and producer.poll() is None:
                producer.kill()
                producer.wait()
            if serve is not None:
                serve.terminate()
                serve.wait(timeout=30)
            server.stop()

    # -- latencies --------------------------------------------------------------------------
    rid_seq = np.concatenate(joiner.rids) if joiner.rids else np.zeros(0, np.uint64)
    kind_seq = np.concatenate(joiner.kinds) if joiner.kinds else np.zeros(0, np.int8)
    pub_v = np.array([v for v, _, _ in published], np.int64)
    pub_s = np.array([s for _, s, _ in published], np.int64)
    pub_t = np.array([t for _, _, t in published], np.float64)
    app_v = np.array(sorted(applied), np.int64)
    app_t = np.array([applied[v] for v in app_v], np.float64)

    def published_time(sample_index: np.ndarray) -> np.ndarray:
        """Publication time of the first version holding each sample (NaN: none)."""
        k = np.searchsorted(pub_s, sample_index, side="right")  # first with samples > i
        return np.where(k < pub_v.shape[0], pub_t[np.minimum(k, pub_v.shape[0] - 1)], np.nan)

    def served_time(sample_index: np.ndarray) -> np.ndarray:
        """Apply time of the first version holding each sample (NaN: never served)."""
        k = np.searchsorted(pub_s, sample_index, side="right")  # first with samples > i
        ok = k < pub_v.shape[0]
        v = np.where(ok, pub_v[np.minimum(k, pub_v.shape[0] - 1)], np.iinfo(np.int64).max)
        j = np.searchsorted(app_v, v)
        ok &= j < app_v.shape[0]
        return np.where(ok, app_t[np.minimum(j, app_v.shape[0] - 1)], np.nan)

    def first_sample(rids: np.ndarray, among: np.ndarray) -> np.ndarray:
        """Index in emission order of the first sample of each rid among ``among`` (-1)."""
        idx = np.flatnonzero(among)
        keys = rid_seq[idx]
        order = np.argsort(keys, kind="stable")
        keys, idx = keys[order], idx[order]
        pos = np.searchsorted(keys, rids)
        hit = (pos < keys.shape[0]) & (keys[np.minimum(pos, keys.shape[0] - 1)] == rids)
        return np.where(hit, idx[np.minimum(pos, keys.shape[0] - 1)], -1)

    flush = act_rid == FLUSH_RID
    click_rid, click_ms = act_rid[~flush], act_ms[~flush]
    t0 = min(imp_ms.min(initial=2**62), click_ms.min(initial=2**62)) / 1000.0
    warm_imp = imp_ms / 1000.0 >= t0 + args.warmup_s  # timed: after the warm-up
    warm_click = click_ms / 1000.0 >= t0 + args.warmup_s
    positive = (kind_seq == SampleKind.POSITIVE) | (kind_seq == SampleKind.CORRECTION)
    ci = first_sample(click_rid, positive)
    ii = first_sample(imp_rid, np.ones(kind_seq.shape[0], bool))
    cs, is_ = (ci >= 0) & warm_click, (ii >= 0) & warm_imp
    click_lat = served_time(ci[cs]) - click_ms[cs] / 1000.0
    imp_lat = served_time(ii[is_]) - imp_ms[is_] / 1000.0
    click_pub = published_time(ci[cs]) - click_ms[cs] / 1000.0
    all_ms = np.concatenate([imp_ms, click_ms])
    span = (all_ms.max() - all_ms.min()) / 1000.0 if all_ms.size > 1 else float("nan")
    during = np.array([(e, s, b) for t, e, s, b, _ in lags
                       if t_start + args.warmup_s <= t <= t_produced]
                      or [(0, 0, 0)])
    return {
        "rate_target": rate,
        "entries": int(all_ms.size), "impressions": int(imp_ms.size),
        "clicks": int(click_ms.size),
        "rate_achieved": all_ms.size / span if span > 0 else float("nan"),
        "samples_trained": int(trainer.samples), "samples_emitted": int(joiner.n),
        "train_samples_per_s": trainer.samples / max(t_produced - t_start, 1e-9),
        "clicks_timed": int(np.isfinite(click_lat).sum()),
        "clicks_untrained": int((ci < 0).sum()),
        "warmup_s": args.warmup_s,
        "impressions_timed": int(np.isfinite(imp_lat).sum()),
        "click_p50": pct(click_lat[np.isfinite(click_lat)], 50),
        "click_p99": pct(click_lat[np.isfinite(click_lat)], 99),
        "click_published_p50": pct(click_pub[np.isfinite(click_pub)], 50),
        "click_published_p99": pct(click_pub[np.isfinite(click_pub)], 99),
        "impression_p50": pct(imp_lat[np.isfinite(imp_lat)], 50),
        "impression_p99": pct(imp_lat[np.isfinite(imp_lat)], 99),
        "lag_entries_p50": float(np.median(during[:, 0])),
        "lag_entries_max": float(during[:, 0].max()),
        "lag_seconds_max": float(during[:, 1].max()),
        "backlog_samples_max": float(during[:, 2].max()),
        "versions_published": int(pub_v.size), "versions_applied": int(app_v.size),
        "join": {k: int(v) for k, v in joiner.counters.items()},
        "timeline": [[round(t - t_start, 2), e, round(s, 3), b, n] for t, e, s, b, n in lags],
    }


# -- the table ------------------------------------------------------------------------------

COLUMNS = [("rate_achieved", "ev/s written", ",.0f"), ("train_samples_per_s", "trained/s", ",.0f"),
           ("click_p50", "click->served p50 s", ".2f"), ("click_p99", "p99 s", ".2f"),
           ("impression_p50", "imp->served p50 s", ".2f"), ("impression_p99", "p99 s", ".2f"),
           ("lag_entries_max", "max lag entries", ",.0f"), ("lag_seconds_max", "max lag s", ".2f"),
           ("backlog_samples_max", "max samples waiting", ",.0f")]


def _cell(values: list[float], fmt: str) -> str:
    a = np.asarray(values, np.float64)
    if len(a) == 1:
        return format(a[0], fmt)
    return f"{np.median(a):{fmt}} [{a.min():{fmt}}, {a.max():{fmt}}]"


def table(results: dict[float, list[dict[str, Any]]]) -> str:
    head = ["target ev/s"] + [h for _, h, _ in COLUMNS] + ["clicks timed"]
    rows = [head]
    for rate, runs in results.items():
        rows.append([f"{rate:,.0f}"] + [_cell([r[k] for r in runs], f) for k, _, f in COLUMNS]
                    + [_cell([r["clicks_timed"] for r in runs], ",.0f")])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    prod = sub.add_parser("_produce")
    prod.add_argument("--url", required=True)
    prod.add_argument("--rate", type=float, required=True)
    prod.add_argument("--seconds", type=float, required=True)
    prod.add_argument("--window-s", type=int, required=True)
    p.add_argument("--rates", type=float, nargs="+", default=[10_000.0, 2_000.0],
                   help="entries per second written (impressions and clicks together)")
    p.add_argument("--seconds", type=float, default=45.0, help="producer time per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--window-s", type=int, default=60, help="join window, event-time seconds")
    p.add_argument("--sync", type=float, default=0.5, help="seconds between versions")
    p.add_argument("--batch-size", type=int, default=512,
                   help="trainer batch (examples/realtime.toml: 512; larger trains faster)")
    p.add_argument("--warmup-s", type=float, default=5.0,
                   help="events of the producer's first seconds are trained, not timed")
    p.add_argument("--drain-s", type=float, default=120.0,
                   help="longest wait for the trainer to catch up after the producer")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.cmd == "_produce":
        produce(args)
        return
    command = "python " + " ".join(shlex.quote(a) for a in
                                   [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    print(f"command: {command}")
    results: dict[float, list[dict[str, Any]]] = {r: [] for r in args.rates}
    for i in range(args.repeats):  # alternate the rates within each repeat
        for rate in args.rates:
            r = one_run(rate, args)
            results[rate].append(r)
            print(f"repeat {i + 1} rate {rate:,.0f}: " + json.dumps(
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                 if k not in ("join", "timeline")}))
    print(f"\ncommand: {command}")
    print(f"medians [min, max] of {args.repeats} run(s) of {args.seconds:g} s each; join "
          f"window {args.window_s} event-s, a version every {args.sync:g} s, batch "
          f"{args.batch_size}")
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"realtime-latency-{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps({"command": command, "results": {str(k): v for k, v in
                                                                results.items()}}, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
