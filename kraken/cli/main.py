"""``kraken``: continual training and real-time serving of recommendation models.

Commands (one module each in ``kraken.cli``)::

    kraken demo     train and serve on the embedded synthetic stream, in one process
                    (--realtime: from a live event log on redis-server, fed as it trains)
    kraken train    train continually on a stream described by a TOML config
                    (--resume, --resume-from CHECKPOINT, --publish, --push)
    kraken report   plot AUC, logloss, live rows and table bytes of runs side by side
    kraken serve    serve predictions over HTTP from the versions a trainer publishes
                    (--model-dir DIR --follow, or --push-port PORT)
    kraken ps       serve one parameter-server shard over gRPC (--shard I --of N --port P)
    kraken launch   start S shards and a trainer (--workers W: W of them under torchrun)
                    on this machine, restart them after a failure (--shards S,
                    --max-restarts); `python -m kraken.train` is `kraken train` for torchrun
    kraken replay   write a dataset into the event log as impressions plus delayed
                    actions (--config X.toml, --rate N or --speedup K, --limit M)

``kraken COMMAND --help`` describes each. Errors exit with status 2 and one line on
stderr naming the problem; status 3 when a parameter-server shard cannot be reached.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kraken.errors import KrakenError, TransportError

COMMANDS = ("demo", "train", "report", "serve", "ps", "launch", "replay")
"""One module of ``kraken.cli`` each."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` that one: a command's module (and
    what it imports: torch, FastAPI, ...) is loaded only when its parser is built, so a
    shard process (``kraken ps``) starts without the model zoo."""
    parser = argparse.ArgumentParser(prog="kraken", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"kraken.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="kraken: %(message)s", stream=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except TransportError as exc:  # a shard is gone: `kraken launch` restarts on this status
        print(f"kraken: error: {exc}", file=sys.stderr)
        return 3
    except KrakenError as exc:
        print(f"kraken: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
