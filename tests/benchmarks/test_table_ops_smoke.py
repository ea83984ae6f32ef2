"""``benchmarks/table_ops.py --quick`` runs every section and writes a consistent record.

Speed is not asserted (that is the benchmark's job, on a quiet machine); what is checked is
that the script cannot rot: every section runs, the JSON record has the fields BENCHMARKS.md
reads, each summary is an honest summary of its repetitions (``min <= median <= max``, ``n``
the repetitions asked for), paired ratios lie within the bounds their two rates allow, and
derived figures agree with the raw ones they come from.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kraken

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "table_ops.py"
REPS = 2  # --quick caps --reps at 2; the demo section runs once


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out_json = tmp_path_factory.mktemp("bench") / "results.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out_json)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p.stdout, json.loads(out_json.read_text())


def _summaries(x: Any, path: str = "") -> Iterator[tuple[str, dict[str, float]]]:
    """Every ``{median, min, max, n}`` dict in the record, with its path."""
    if isinstance(x, dict):
        if {"median", "min", "max", "n"} <= set(x):
            yield path, x
        for k, v in x.items():
            yield from _summaries(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _summaries(v, f"{path}[{i}]")


def test_every_section_prints_its_table(run: tuple[str, dict[str, Any]]) -> None:
    stdout, _ = run
    for title in ("== lookup of present keys", "== insert-or-find", "== admission of all-new",
                  "== apply_gradients",
                  "== bytes per live row", "== RowWiseAdaGrad bytes / Adam bytes",
                  "wall time"):
        assert title in stdout, f"missing section {title!r}:\n{stdout[-3000:]}"
    for section in ("lookup", "insert", "admit", "optim", "memory", "demo"):
        assert f"[{section}: " in stdout


def test_the_record_has_its_fields(run: tuple[str, dict[str, Any]]) -> None:
    _, r = run
    assert set(r) == {"meta", "lookup", "insert", "admit", "optim", "memory", "demo"}
    meta = r["meta"]
    assert set(meta) >= {"date", "argv", "python", "cpus", "kraken", "numpy", "torch", "git"}
    assert meta["kraken"] == kraken.__version__ and "--quick" in meta["argv"]
    for s in ("lookup", "insert", "admit", "optim", "memory", "demo"):
        assert r[s]["section_wall_s"] > 0 and len(r[s]["loadavg_1min"]) == 2, s
        assert "error" not in r[s], r[s].get("error")
    assert (r["lookup"]["live"], r["lookup"]["batch"]) == (50_000, 5_000)
    assert set(r["lookup"]) >= {"dim16_zipf", "dim16_uniform"}
    assert set(r["insert"]) >= {"zipf", "uniform"}
    assert set(r["optim"]["check_max_abs_diff"]) == {"SGD", "AdaGrad", "Adam"}
    assert set(r["optim"]["ratios"]) == {"SGD", "AdaGrad", "Adam"}


def test_every_summary_summarises_its_repetitions(run: tuple[str, dict[str, Any]]) -> None:
    _, r = run
    found = dict(_summaries({k: v for k, v in r.items() if k != "meta"}))
    assert len(found) >= 20, sorted(found)
    for path, s in found.items():
        assert s["min"] <= s["median"] <= s["max"], (path, s)
        # kernel time and page faults of a small batch may be 0; rates and times may not
        counted = ".kraken_kernel_per_batch." in path
        assert math.isfinite(s["max"]) and (s["min"] >= 0 if counted else s["min"] > 0), \
            (path, s)
        assert s["n"] == (1 if path.startswith(".demo") else REPS), (path, s)


def test_paired_ratios_lie_within_their_rates(run: tuple[str, dict[str, Any]]) -> None:
    """A per-repetition ratio a[r] / b[r] is within [min a / max b, max a / min b]."""
    _, r = run
    pairs = []
    for key in ("dim16_zipf", "dim16_uniform"):
        rates = r["lookup"][key]["rows_per_s"]
        pairs.append((rates["kraken lookup"], rates["torch.index_select"],
                       r["lookup"][key]["kraken_over_index_select"]))
        pairs.append((rates["numpy take"], rates["torch.index_select"],
                      r["lookup"][key]["take_over_index_select"]))
    adm = r["admit"]["rows_per_s"]
    pairs.append((adm["kraken lookup(train=True)"],
                  adm["pandas Int64HashTable + numpy random rows"],
                  r["admit"]["kraken_over_pandas"]))
    torch_names = {"SGD": "torch.optim.SGD", "AdaGrad": "torch.optim.Adagrad",
                   "Adam": "torch.optim.SparseAdam"}
    for name, ratio in r["optim"]["ratios"].items():
        rates = r["optim"]["unique_rows_per_s"]
        pairs.append((rates[f"kraken {name}"], rates[torch_names[name]], ratio))
    for a, b, ratio in pairs:
        lo, hi = a["min"] / b["max"], a["max"] / b["min"]
        assert lo * (1 - 1e-9) <= ratio["min"] and ratio["max"] <= hi * (1 + 1e-9), (a, b, ratio)


def test_optimizers_agree_with_torch(run: tuple[str, dict[str, Any]]) -> None:
    _, r = run
    for name, diff in r["optim"]["check_max_abs_diff"].items():
        assert 0 <= diff < 1e-4, (name, diff)


def test_memory_figures_agree_with_their_raw_numbers(run: tuple[str, dict[str, Any]]) -> None:
    _, r = run
    mem = r["memory"]
    by = {}
    for c in mem["configs"]:
        dim, s = c["dim"], c["state_width"]
        assert c["ideal_bytes_per_row"] == 8 + 4 * dim + 4 * s + 8
        assert [lv["live"] for lv in c["levels"]] == mem["levels"]
        for lv in c["levels"]:
            assert 0 < lv["load"] <= 1
            assert lv["ratio_to_ideal"] == pytest.approx(
                lv["rss_bytes_per_row"] / c["ideal_bytes_per_row"])
            by[(c["optimizer"], dim, lv["live"])] = lv["rss_bytes_per_row"]
    assert {c["optimizer"] for c in mem["configs"]} == {"RowWiseAdaGrad", "Adam"}
    big = mem["large"]  # one table filled to --mem-rows: before / after its last growth, end
    assert (big["optimizer"], big["dim"]) == ("RowWiseAdaGrad", 16)
    before, after, final = big["levels"]
    assert (after["live"], final["live"]) == (before["live"] + 1, 60_000)
    assert after["index_slots"] == 2 * before["index_slots"] and before["load"] == 0.75
    for lv in big["levels"]:
        assert lv["ratio_to_ideal"] == pytest.approx(lv["rss_bytes_per_row"] / 84)
    assert len(mem["rowwise_over_adam"]) == len(mem["levels"])
    for e in mem["rowwise_over_adam"]:
        want = by[("RowWiseAdaGrad", e["dim"], e["live"])] / by[("Adam", e["dim"], e["live"])]
        assert e["ratio"] == pytest.approx(want)
        assert 0 < e["ideal_ratio"] < 1
