"""``kraken demo --realtime`` as a user runs it: a real redis-server, the feed, the
trainer reading the log and a prediction server, stopped by ``--seconds``."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.cli.realtime import REALTIME_RUN, by_event_time
from kraken.config import read_config_file
from kraken.data.raw import RawChunk
from tests.conftest import ROOT
from tests.redis_server import require_redis_server

KRAKEN = [sys.executable, "-m", "kraken.cli.main"]


def _row(text: str, name: str) -> str:
    """The value of a summary row ``name`` (one line)."""
    m = re.search(rf"^{re.escape(name)}\s{{2,}}(.+)$", text, re.MULTILINE)
    assert m, f"no {name!r} row in:\n{text}"
    return m.group(1)


def _int(text: str) -> int:
    return int(text.split()[0].replace(",", ""))


def test_the_example_run_file_is_the_demos() -> None:
    assert read_config_file(ROOT / "examples" / "realtime.toml") == REALTIME_RUN


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=40), min_size=1, max_size=5),
       st.integers(1, 7))
def test_chunks_cut_by_event_time_keep_every_record_in_order(gaps, span) -> None:
    chunks, t = [], 1000
    for chunk_gaps in gaps:  # event times non-decreasing across chunks, as a stream's
        ts = t + np.cumsum(chunk_gaps)
        t = int(ts[-1])
        n = ts.shape[0]
        chunks.append(RawChunk({"c0": np.arange(n).astype(str).astype(object)},
                               np.arange(n, dtype=np.float32) % 2, ts.astype(np.int64)))
    out = list(by_event_time(iter(chunks), span))
    for c in out:  # each piece lies within one span, and is not empty
        assert len(c) > 0 and len(set((c.ts // span).tolist())) == 1
    for name in ("ts", "label"):
        assert np.concatenate([getattr(c, name) for c in out]).tolist() == \
            np.concatenate([getattr(c, name) for c in chunks]).tolist()
    assert np.concatenate([c.columns["c0"] for c in out]).tolist() == \
        np.concatenate([c.columns["c0"] for c in chunks]).tolist()
    # cut only where needed: consecutive pieces of one input chunk differ in span
    expected = sum(len(set((c.ts // span).tolist())) for c in chunks)
    assert len(out) == expected


def test_realtime_demo_trains_from_the_log_and_serves(tmp_path: Path) -> None:
    require_redis_server()
    cfg = tmp_path / "run.toml"  # the example with a short join window: labels in ~2 s
    text = (ROOT / "examples" / "realtime.toml").read_text()
    cfg.write_text(text.replace("window_s = 60 ", "window_s = 20 ")
                   .replace("log_every_s = 1.0", "log_every_s = 0.5"))
    assert "window_s = 20 " in cfg.read_text()
    run_dir = tmp_path / "run"
    out = subprocess.run([*KRAKEN, "demo", "--realtime", "--seconds", "4", "--rate", "1500",
                          "--config", str(cfg),
                          "--run-dir", str(run_dir)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert _row(text, "stopped") == "--seconds 4 reached"
    written = _int(_row(text, "events written"))
    trained = _int(_row(text, "samples"))
    read = _int(_row(text, "log read"))
    assert 0 < trained and 0 < read <= written
    join = _row(text, "join")
    positives, negatives = _int(join), _int(join.split("positives, ")[1])
    assert positives > 0 and negatives > 0  # clicks joined, windows expired
    lag = re.fullmatch(r"([\d,]+) entries, ([\d.]+)s at the trainer.s last read .*",
                       _row(text, "consumer lag"))
    assert lag is not None
    assert re.search(r"\| in [\d,]+ ev/s  event->served [\d.]+s  serve v\d+ \|", text)
    assert re.search(r"lag [\d,]+ entries [\d.]+s", text)  # on the progress line
    served = _int(_row(text, "served version"))
    assert served > 0
    assert "from version" in _row(text, "sample request")
    assert re.fullmatch(r"[\d.]+s \(newest event written .*\)", _row(text, "event->served"))
    ckpt = Path(_row(text, "checkpoint"))
    assert ckpt.parent == run_dir / "checkpoints"
    assert (ckpt / "stream.kdat").is_file()  # the log's position and the joiner's state
    port = int(re.search(r"redis-server on redis://127\.0\.0\.1:(\d+)/0", text).group(1))
    with socket.socket() as s:  # redis-server was stopped with everything else
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_sigterm_stops_the_realtime_demo_cleanly(tmp_path: Path) -> None:
    require_redis_server()
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*KRAKEN, "demo", "--realtime", "--rate", "1000",
                             "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        seen = []
        assert proc.stdout is not None
        for line in proc.stdout:  # until the trainer starts
            seen.append(line)
            if line.startswith("kraken demo --realtime: model"):
                break
        else:
            raise AssertionError("".join(seen))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(seen) + out
    assert proc.returncode == 0, err
    assert _row(text, "stopped") == "signal SIGTERM"
    ckpt = Path(_row(text, "checkpoint"))
    assert (ckpt / "stream.kdat").is_file()
    assert _int(_row(text, "served version")) > 0
    port = int(re.search(r"redis-server on redis://127\.0\.0\.1:(\d+)/0", text).group(1))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
