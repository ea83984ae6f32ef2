"""``kraken replay --config X.toml (--rate N | --speedup K) [--limit M]``: a dataset
into the event log, as impressions plus delayed actions (see kraken/data/replay.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kraken.config import build_dataclass, read_config_file
from kraken.data import open_stream
from kraken.data.raw import raw_chunks, raw_layout
from kraken.data.replay import ReplayConfig, ReplayStats, replay
from kraken.errors import ConfigError, TransportError

_LOG_KEYS = ("prefix", "partitions")  # the [log] keys a replay uses, besides url


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="replay a dataset into the event log (impressions + delayed actions)",
        description="Reads a dataset (the [data] section of --data FILE, else [replay.data] "
                    "or [data] of --config) and writes it into the Redis log of --config's "
                    "[log] (url, prefix, partitions): one impression per record and, for a "
                    "clicked record, a click action a drawn lag later. Knobs of a [replay] "
                    "section (or the flags below): lag_mean_s, lag_max_s, seed, rid_base, "
                    "maxlen, pipeline, reconnect_s. Prints the [log] schema matching the "
                    "written columns.")
    p.add_argument("--config", required=True,
                   help="TOML file with [log] (a trainer's run file reading the log will do)")
    p.add_argument("--data", default=None, metavar="RUN_FILE",
                   help="take the dataset from this run file's [data] section "
                        "(e.g. examples/movielens-1m.toml)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=None,
                      help="entries per second, impressions and actions together")
    pace.add_argument("--speedup", type=float, default=None,
                      help="K times the dataset's own event-time speed")
    p.add_argument("--limit", type=int, default=None, help="stop after M impressions")
    p.add_argument("--maxlen", type=int, default=None,
                   help="cap each stream near this length (XADD MAXLEN ~)")
    p.add_argument("--lag-mean-s", type=float, default=None, dest="lag_mean_s",
                   help="mean delay of a click after its impression (default 20 s)")
    p.add_argument("--lag-max-s", type=int, default=None, dest="lag_max_s",
                   help="longest delay (default 600 s)")
    p.add_argument("--seed", type=int, default=None, help="seed of the delays (default 0)")
    p.add_argument("--rid-base", type=int, default=None, dest="rid_base",
                   help="first request id (default 0); request ids must be unique in a log")
    p.add_argument("--url", default=None, help="redis://host:port/db (overrides [log] url)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run)


def load(path: str | Path, args: argparse.Namespace) -> tuple[str, ReplayConfig, Any]:
    """``(url, config, stream)`` from the file and the flags; errors name the key."""
    doc = read_config_file(path)
    log = doc.get("log")
    if not isinstance(log, dict):
        raise ConfigError(f"{path}: log: a [log] section with the server's url is required")
    url = args.url or log.get("url")
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{path}: log.url: expected redis://host:port/db, got {url!r}")
    knobs = dict(doc.get("replay", {}))
    data = knobs.pop("data", None) or doc.get("data")
    where = f"{path}: replay.data"
    if args.data is not None:
        data, where = read_config_file(args.data).get("data"), f"{args.data}: data"
    if not isinstance(data, dict) or "source" not in data:
        raise ConfigError(f"{where}: a dataset table with a source is required ([data] of "
                          f"--data, or [replay.data] / [data] of --config)")
    labels = log.get("label_actions", ["click"])
    action = labels[0] if isinstance(labels, list) and labels else "click"
    fields = {**{k: log[k] for k in _LOG_KEYS if k in log}, **knobs, "action": action}
    for flag in ("rate", "speedup", "limit", "maxlen", "lag_mean_s", "lag_max_s", "seed",
                 "rid_base"):
        if getattr(args, flag) is not None:
            fields[flag] = getattr(args, flag)
    try:
        config = build_dataclass(ReplayConfig, fields, "replay")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    stream = open_stream(data["source"], **{k: v for k, v in data.items() if k != "source"})
    return url, config, stream


def run(args: argparse.Namespace) -> int:
    import redis  # noqa: PLC0415 - only this command needs the client

    url, config, stream = load(args.config, args)
    layout = raw_layout(stream)
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise TransportError(f"log.url: cannot reach the Redis server at {url}: {exc}") from exc

    def show(s: ReplayStats) -> None:
        if not args.quiet:
            print(f"\rreplay: {s.impressions} impressions, {s.actions} actions, "
                  f"{s.rate:,.0f} entries/s", end="", file=sys.stderr, flush=True)

    try:
        stats = replay(client, raw_chunks(stream), config, progress=show)
    finally:
        client.close()
    if not args.quiet:
        print(file=sys.stderr)
    span = "" if stats.first_ts is None else f", event time {stats.first_ts}..{stats.last_ts}"
    if stats.outages:
        span += (f"; the server was unreachable {stats.outages} time(s): entries written "
                 f"around an outage may appear twice (the join drops duplicates)")
    print(f"replayed {stats.impressions} impressions and {stats.actions} '{config.action}' "
          f"actions into {url} ({config.prefix}:*, {config.partitions} partition(s)) in "
          f"{stats.seconds:.1f} s{span}")
    schema = layout.to_dict()
    print("[log.schema]  # the columns written")
    for k, v in schema.items():
        print(f"{k} = {v!r}".replace("'", '"'))
    return 0
