"""``kraken`` entry point: dispatches to one module per command."""

from __future__ import annotations

import argparse
import sys

from kraken.errors import KrakenError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kraken", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from kraken.cli import demo, report, serve, train

    demo.add_parser(sub)
    train.add_parser(sub)
    report.add_parser(sub)
    serve.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KrakenError as exc:
        print(f"kraken: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
