"""``kraken report RUN_DIR [RUN_DIR ...]``: PNG plots of one or more runs side by side.

Reads each run's ``metrics.jsonl`` and draws, against samples seen: window AUC,
cumulative logloss, live rows per table and the bytes of each table (what the trainer
recorded from the parameter server's stats at each record: index, rows and optimizer
state, admission sketch). Process memory is not drawn: it counts the interpreter, torch
and buffers, not the model.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from kraken.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="plot AUC, logloss, live rows and table bytes of runs")
    p.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    p.add_argument("--out", default="report.png", help="output PNG (default report.png)")
    p.set_defaults(run=run)


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """The ``window`` records of a run (``progress`` ones when a run had no full window)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no metrics.jsonl (is this a kraken run directory?)")
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    windows = [r for r in recs if r["kind"] == "window"]
    return windows or [r for r in recs if r["kind"] in ("progress", "final")]


def per_table(recs: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """``{table: [value per record]}`` of one table stat (``live_rows``, ``memory_bytes``);
    NaN where a record lacks the table."""
    names = sorted({n for r in recs for n in r["tables"]})
    return {n: [float(r["tables"][n][key]) if n in r["tables"] else math.nan for r in recs]
            for n in names}


def plot(run_dirs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax_auc, ax_ll, ax_rows, ax_mem = axes.flat
    for run_dir in run_dirs:
        recs = load_records(run_dir)
        xs = [r["samples"] for r in recs]
        for ax, ys in ((ax_auc, [r["window"]["auc"] for r in recs]),
                       (ax_ll, [r["cumulative"]["logloss"] for r in recs])):
            ax.plot(xs, [y if y is not None else math.nan for y in ys], marker=".",
                    label=run_dir.name)
        for name, ys in per_table(recs, "live_rows").items():
            ax_rows.plot(xs, ys, marker=".", label=f"{run_dir.name}: {name}")
        for name, ys in per_table(recs, "memory_bytes").items():
            ax_mem.plot(xs, [y / 2**20 for y in ys], marker=".", label=f"{run_dir.name}: {name}")
    for ax, title in ((ax_auc, "window AUC"), (ax_ll, "cumulative logloss"),
                      (ax_rows, "live rows per table"), (ax_mem, "table memory (MiB)")):
        ax.set_title(title)
        ax.set_xlabel("samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    plot([Path(d) for d in args.run_dirs], out)
    print(f"wrote {out}")
    return 0
