"""Writers of small synthetic files in the real formats (no real data is copied).

Each writer returns the lines it wrote (without line ends) so tests can insert
malformed lines at known places and compute expectations independently.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kraken.data.base import Batch

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

AVAZU_HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,"
                "app_domain,app_category,device_id,device_ip,device_model,device_type,"
                "device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")
GENRES_100K = ("unknown", *GENRES)


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


def criteo_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` Criteo lines: label, 13 ints (some empty/negative), 26 hex (some empty)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-3, 5000)))
                for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 2**32)):08x}"
                for _ in range(26)]
        lines.append("\t".join([str(int(rng.random() < 0.3)), *ints, *cats]))
    return lines


def avazu_lines(n: int, seed: int = 0, hours: tuple[int, ...] = (14102100, 14102213)) -> list[str]:
    """``n`` Avazu data lines (no header)."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        hexes = [f"{int(rng.integers(0, 2**32)):08x}" for _ in range(9)]
        nums = [str(int(rng.integers(0, 3000))) for _ in range(8)]
        row = [str(10**19 + i), str(int(rng.random() < 0.2)), str(hours[i % len(hours)]),
               "1005", str(int(rng.integers(0, 3))), *hexes, "1", "0", *nums[:-2], "-1", nums[-1]]
        lines.append(",".join(row))
    return lines


def movielens_tables(n_ratings: int, seed: int = 0) -> dict[str, list[tuple]]:
    """Raw MovieLens-like tables: ratings (u, m, r, ts), users, movies (id, title, genres)."""
    rng = np.random.default_rng(seed)
    n_users, n_movies = 12, 9
    users = [(u, int(rng.choice([1, 18, 25, 35])), "MF"[u % 2], int(rng.integers(0, 21)),
              f"{int(rng.integers(0, 99999)):05d}") for u in range(1, n_users + 1)]
    movies = []
    for m in range(1, n_movies + 1):
        k = int(rng.integers(0, 4))
        genres = tuple(sorted(rng.choice(len(GENRES), size=k, replace=False).tolist()))
        movies.append((m, f"Mis\u00e9rables {m} (1995)", tuple(GENRES[g] for g in genres)))
    ts = 978_300_000 + rng.integers(0, 500, size=n_ratings) * 3600  # many ties
    ratings = [(int(rng.integers(1, n_users + 2)), int(rng.integers(1, n_movies + 2)),
                int(rng.integers(1, 6)), int(t)) for t in ts]  # ids beyond the tables too
    return {"ratings": ratings, "users": users, "movies": movies}


def write_ml1m(root: Path, tables: dict[str, list[tuple]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "ratings.dat", ["::".join(map(str, r)) for r in tables["ratings"]])
    write_lines(root / "users.dat", [f"{u}::{g}::{a}::{o}::{z}"
                                     for u, a, g, o, z in tables["users"]])
    write_lines(root / "movies.dat", [f"{m}::{t}::{'|'.join(g)}"
                                      for m, t, g in tables["movies"]], "latin-1")
    return root


def write_ml100k(root: Path, tables: dict[str, list[tuple]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_lines(root / "u.data", ["\t".join(map(str, r)) for r in tables["ratings"]])
    write_lines(root / "u.user", ["|".join(map(str, u)) for u in tables["users"]])
    items = []
    for m, t, g in tables["movies"]:
        flags = ["1" if name in g or (name == "unknown" and not g) else "0"
                 for name in GENRES_100K]
        items.append("|".join([str(m), t, "01-Jan-1995", "", "http://x", *flags]))
    write_lines(root / "u.item", items, "latin-1")
    return root


def utc_hour_weekday(ts: int) -> tuple[int, int]:
    d = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return d.hour, d.weekday()


def concat(batches: list[Batch]) -> dict[str, np.ndarray]:
    """The rows of ``batches`` as one dict of arrays (jagged as values + lengths)."""
    out: dict[str, np.ndarray] = {
        "keys": np.concatenate([b.keys for b in batches]),
        "dense": np.concatenate([b.dense for b in batches]),
        "label": np.concatenate([b.label for b in batches]),
        "event_time": np.concatenate([b.event_time for b in batches]),
    }
    for name in batches[0].jagged if batches else ():
        out[f"{name}.values"] = np.concatenate([b.jagged[name].values for b in batches])
        out[f"{name}.lengths"] = np.concatenate([b.jagged[name].lengths for b in batches])
    return out


def assert_same_rows(a: list[Batch], b: list[Batch]) -> None:
    assert sum(map(len, a)) == sum(map(len, b))
    if not a or not b:
        return
    ca, cb = concat(a), concat(b)
    assert ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def malformed_reports() -> Iterator[list[str]]:
    """The one-line malformed-record reports logged by the data layer inside the block."""
    messages: list[str] = []
    handler = _Collect(messages)
    logger = logging.getLogger("kraken.data")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
