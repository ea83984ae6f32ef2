"""Rendering trainer records as a live progress line and a closing summary table."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["ProgressPrinter", "summary_table"]


def _f(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


class ProgressPrinter:
    """Prints ``progress`` records on one updating line (a tty) or one line each;
    ``extra()`` (if given) is appended to each line (the demo shows serving there).
    A record of a log stream shows its consumer lag (entries written and not yet read,
    seconds the oldest of them has waited)."""

    def __init__(self, out: TextIO = sys.stdout, extra: Callable[[], str] | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        self.extra = extra

    def __call__(self, rec: dict[str, Any]) -> None:
        if rec["kind"] == "window" and self.tty:
            return
        tables = "  ".join(f"{n}: {t['live_rows']:,} live +{t['admitted']:,} "
                           f"-{t['evicted']:,}" for n, t in rec["tables"].items())
        w, c = rec["window"], rec["cumulative"]
        line = (f"[{rec['kind']:>8}] {rec['samples']:>10,} samples "
                f"{_f(rec['samples_per_s'], ',.0f'):>8}/s  "
                f"AUC win {_f(w['auc'], '.4f')} cum {_f(c['auc'], '.4f')}  "
                f"logloss {_f(c['logloss'], '.4f')}  calib {_f(c['calibration'], '.3f')}  "
                + (f"lag {rec['lag']['entries']:,.0f} entries {rec['lag']['seconds']:.1f}s  "
                   if "lag" in rec else "")
                + (f"| {self.extra()} |  " if self.extra is not None else "")
                + f"{tables}  rss {rec['rss_mb']:,.0f}MB")
        if self.tty and rec["kind"] == "progress":
            self.out.write("\r" + line[: 240] + "\x1b[K")
        else:
            self.out.write(("\n" if self.tty else "") + line + "\n")
        self.out.flush()


def summary_table(rows: list[tuple[str, str]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    rule = "-" * (width + 2 + max(len(v) for _, v in rows))
    return "\n".join([rule] + [f"{k:<{width}}  {v}" for k, v in rows] + [rule])
