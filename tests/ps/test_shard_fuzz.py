"""Fuzzing the shard's request decoding: malformed requests get an error and change nothing.

Valid ``Pull`` and ``Push`` requests (encoded exactly as :class:`RemoteShard` encodes
them) are mutated at three levels and fed to :meth:`ShardServer.handle`, the same
function a gRPC call reaches:

- bytes: truncated, a byte flipped, bytes inserted (the container's checksums must
  catch every change that is not in padding);
- fields: wrong dtypes and dimensions, a key count that does not match the gradient
  rows, an unknown or duplicated table, bad ``now``/``train``/``request_id`` values,
  non-finite gradients, missing arrays;
- the container header: not JSON, not an object, deeply nested, huge or negative shape
  claims, offsets outside the payload, missing checksums, foreign dtypes.

Every reply must be an error container naming a :class:`~kraken.errors.KrakenError`
subclass, no handler may fail with anything else (``internal_errors`` stays 0), and the
shard's state (clock, stats, every row, the reply window) is what it was before.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytest.importorskip("grpc")

from kraken import errors  # noqa: E402
from kraken.arrayfile import FORMAT_VERSION, MAGIC  # noqa: E402
from kraken.optim import SGD, RowWiseAdaGrad  # noqa: E402
from kraken.ps import Shard, codec  # noqa: E402
from kraken.ps.server import ShardServer  # noqa: E402
from kraken.ps.wire import ByteClient  # noqa: E402
from kraken.table import TableConfig  # noqa: E402

TABLES = {"emb": TableConfig(dim=4, capacity=10_000, optimizer=RowWiseAdaGrad(lr=0.1)),
          "wide": TableConfig(dim=1, capacity=10_000, optimizer=SGD(lr=0.5))}
KEYS = np.arange(0, 200, 7, dtype=np.int64)
NOW = 5

Request = tuple[str, dict[str, Any], dict[str, np.ndarray]]  # method, meta, arrays


def pull_request(keys: np.ndarray = KEYS, now: int = NOW) -> Request:
    return ("Pull", {"tables": ["emb", "wide"], "train": True, "now": now,
                     "request_id": "pull-1"},
            {"keys/emb": keys, "keys/wide": keys})


def push_request(keys: np.ndarray = KEYS, now: int = NOW) -> Request:
    rng = np.random.default_rng(1)
    return ("Push", {"tables": ["emb", "wide"], "now": now, "request_id": "push-1"},
            {"keys/emb": keys, "grads/emb": rng.normal(size=(keys.size, 4)).astype(np.float32),
             "keys/wide": keys, "grads/wide": rng.normal(size=(keys.size, 1)).astype(np.float32)})


def encoded(req: Request) -> bytes:
    return codec.encode(req[1], req[2])


def _seeded_shard() -> Shard:
    shard = Shard(TABLES, evict_every=2)
    k = np.arange(0, 100, 3, dtype=np.int64)
    shard.pull({"emb": k, "wide": k}, train=True, now=1)
    shard.push({"emb": (k, np.ones((k.size, 4), np.float32)),
                "wide": (k, np.ones((k.size, 1), np.float32))}, now=2)
    return shard


@pytest.fixture(scope="module")
def server() -> Iterator[ShardServer]:
    srv = ShardServer(_seeded_shard())
    try:
        yield srv
    finally:
        srv.stop(0)


def fingerprint(srv: ShardServer) -> dict[str, Any]:
    """Everything a request could change: clock, stats, rows, the reply window."""
    shard = srv.shard
    out: dict[str, Any] = {"info": shard.info().to_dict(), "replayed": shard.replayed,
                           "stats": codec.stats_to_json(shard.stats())}
    for name in TABLES:
        snap = shard.snapshot(name)
        order = np.argsort(snap.keys)
        out[name] = (snap.version, snap.keys[order].tobytes(), snap.weights[order].tobytes())
    return out


def assert_refused(srv: ShardServer, method: str, payload: bytes) -> str:
    """Send ``payload``; the reply must be an error and nothing may change. Returns its type."""
    before, internal = fingerprint(srv), srv.internal_errors
    reply = codec.decode(srv.handle(method, payload), "reply")
    err = reply.meta.get("error")
    assert isinstance(err, dict), f"{method} accepted a malformed request: {reply.meta}"
    cls = getattr(errors, err["type"], None)
    assert err["type"] in errors.__all__ and issubclass(cls, errors.KrakenError), err
    assert srv.internal_errors == internal, f"a handler crashed: {err}"
    assert fingerprint(srv) == before, f"a refused {method} changed the shard: {err}"
    return str(err["type"])


def test_the_unmutated_requests_are_valid() -> None:
    """The fuzz bases work (else every mutation would be refused for the wrong reason)."""
    srv = ShardServer(_seeded_shard())
    try:
        before = fingerprint(srv)
        for req in (pull_request(), push_request()):
            reply = codec.decode(srv.handle(req[0], encoded(req)), "reply")
            assert "error" not in reply.meta, reply.meta
        assert fingerprint(srv) != before
        assert srv.errors == 0
    finally:
        srv.stop(0)


# -- bytes ------------------------------------------------------------------------------

BASES = [pull_request(), push_request()]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(BASES), data=st.data(),
       op=st.sampled_from(["truncate", "flip", "insert", "delete"]))
def test_damaged_bytes_are_refused(server: ShardServer, base: Request, data: st.DataObject,
                                   op: str) -> None:
    raw = encoded(base)
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    if op == "truncate":
        bad = raw[:pos]
    elif op == "flip":
        bad = raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
    elif op == "insert":
        bad = raw[:pos] + data.draw(st.binary(min_size=1, max_size=16)) + raw[pos:]
    else:
        bad = raw[:pos] + raw[pos + data.draw(st.integers(1, 64)):]
    try:  # a change confined to padding leaves the same request: nothing to refuse
        same = codec.decode(bad)
        assume(not (same.meta == base[1] and same.arrays.keys() == base[2].keys()
                    and all(np.array_equal(same.arrays[k], v) for k, v in base[2].items())))
    except errors.KrakenError:
        pass
    assert_refused(server, base[0], bad)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=512), method=st.sampled_from(
    ["Info", "Pull", "Push", "Evict", "Stats", "Delta", "Snapshot", "Save", "Load"]))
def test_random_bytes_are_refused_by_every_method(server: ShardServer, junk: bytes,
                                                  method: str) -> None:
    assert_refused(server, method, junk)


# -- fields -----------------------------------------------------------------------------

def _set(key: str, value: Any) -> Callable[[Request], Request]:
    return lambda r: (r[0], {**r[1], key: value}, r[2])


def _drop_meta(key: str) -> Callable[[Request], Request]:
    return lambda r: (r[0], {k: v for k, v in r[1].items() if k != key}, r[2])


def _array(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Request], Request]:
    return lambda r: (r[0], r[1], {**r[2], name: fn(r[2][name])})


def _drop_array(name: str) -> Callable[[Request], Request]:
    return lambda r: (r[0], r[1], {k: v for k, v in r[2].items() if k != name})


def _nan(g: np.ndarray) -> np.ndarray:
    g = g.copy()
    g[len(g) // 2, 0] = np.nan
    return g


COMMON: dict[str, Callable[[Request], Request]] = {
    "keys int32": _array("keys/emb", lambda k: k.astype(np.int32)),
    "keys float64": _array("keys/emb", lambda k: k.astype(np.float64)),
    "keys uint64": _array("keys/emb", lambda k: k.astype(np.uint64)),
    "keys 2-d": _array("keys/emb", lambda k: k.reshape(-1, 1)),
    "keys 0-d": _array("keys/emb", lambda k: np.array(k[0])),
    "keys missing": _drop_array("keys/wide"),
    "unknown table": _set("tables", ["emb", "nope"]),
    "duplicate table": _set("tables", ["emb", "emb"]),
    "table not a string": _set("tables", ["emb", 3]),
    "tables not a list": _set("tables", "emb"),
    "tables missing": _drop_meta("tables"),
    "now negative": _set("now", -1),
    "now huge": _set("now", 1 << 80),
    "now a string": _set("now", "5"),
    "now a float": _set("now", 5.0),
    "now a bool": _set("now", True),
    "request id a number": _set("request_id", 7),
}
PULL_ONLY: dict[str, Callable[[Request], Request]] = {
    "train a string": _set("train", "yes"),
    "train missing": _drop_meta("train"),
    "train without now": _set("now", None),
}
PUSH_ONLY: dict[str, Callable[[Request], Request]] = {
    "more keys than grads": _array("keys/emb", lambda k: np.append(k, 10_000)),
    "fewer keys than grads": _array("keys/wide", lambda k: k[:-1]),
    "grads float64": _array("grads/emb", lambda g: g.astype(np.float64)),
    "grads float16": _array("grads/emb", lambda g: g.astype(np.float16)),
    "grads int32": _array("grads/wide", lambda g: np.zeros(g.shape, np.int32)),
    "grads wrong dim": _array("grads/emb", lambda g: np.hstack([g, g])),
    "grads 1-d": _array("grads/wide", lambda g: g.reshape(-1)),
    "grads 3-d": _array("grads/emb", lambda g: g.reshape(-1, 2, 2)),
    "grads nan": _array("grads/emb", _nan),
    "grads inf": _array("grads/wide", lambda g: np.full_like(g, np.inf)),
    "grads missing": _drop_array("grads/emb"),
    "now missing": _drop_meta("now"),
}


@pytest.mark.parametrize("method,name", [("Pull", n) for n in {**COMMON, **PULL_ONLY}]
                         + [("Push", n) for n in {**COMMON, **PUSH_ONLY}])
def test_each_malformed_field_is_refused(server: ShardServer, method: str, name: str) -> None:
    mutate = {**COMMON, **PULL_ONLY, **PUSH_ONLY}[name]
    base = pull_request() if method == "Pull" else push_request()
    assert_refused(server, method, encoded(mutate(base)))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.sampled_from(sorted({**COMMON, **PUSH_ONLY})), min_size=1,
                      max_size=4, unique=True))
def test_combined_malformed_fields_are_refused(server: ShardServer, names: list[str]) -> None:
    req = push_request()
    for n in names:
        try:
            req = {**COMMON, **PUSH_ONLY}[n](req)
        except (KeyError, IndexError, ValueError):
            assume(False)  # an earlier mutation removed what this one changes
    try:
        payload = encoded(req)
    except errors.KrakenError:
        assume(False)
    assert_refused(server, "Push", payload)


# -- the container header ------------------------------------------------------------------

def container(header: bytes, body: bytes = b"") -> bytes:
    prefix = struct.pack("<8sIIII", MAGIC, FORMAT_VERSION, len(header), zlib.crc32(header), 0)
    return prefix + header + body


def _entry(**kw: Any) -> dict[str, Any]:
    body = np.arange(4, dtype=np.int64)
    e = {"name": "keys/emb", "dtype": "int64", "shape": [4], "offset": 256,
         "nbytes": 32, "crc32": zlib.crc32(body.tobytes())}
    e.update(kw)
    return {k: v for k, v in e.items() if v is not ...}


def _doc(*entries: dict[str, Any]) -> bytes:
    meta = {"tables": ["emb"], "train": True, "now": NOW}
    return json.dumps({"meta": meta, "arrays": list(entries)}).encode()


def _padded(header: bytes) -> bytes:
    raw = container(header)
    return raw + b"\0" * (256 - len(raw)) + np.arange(4, dtype=np.int64).tobytes()


HEADERS: dict[str, bytes] = {
    "not json": container(b"{not json"),
    "not utf-8": container(b"\xff\xfe{}"),
    "json list": container(b"[1, 2]"),
    "json number": container(b"42"),
    "meta a list": container(json.dumps({"meta": [], "arrays": []}).encode()),
    "arrays missing": container(json.dumps({"meta": {}}).encode()),
    "deeply nested": container(b"[" * 100_000 + b"]" * 100_000),
    "huge shape": _padded(_doc(_entry(shape=[1 << 62, 1 << 62], nbytes=0))),
    "huge shape wrapping to the size": _padded(_doc(_entry(shape=[1 << 61, 4], nbytes=0))),
    "shape product overflows": _padded(_doc(_entry(shape=[1 << 32, 1 << 32, 2], nbytes=0))),
    "negative shape": _padded(_doc(_entry(shape=[-4], nbytes=-32))),
    "negative dims cancelling": _padded(_doc(_entry(shape=[-2, -2], nbytes=32))),
    "shape not a list": _padded(_doc(_entry(shape=4))),
    "shape of strings": _padded(_doc(_entry(shape=["x"]))),
    "negative offset": _padded(_doc(_entry(offset=-8))),
    "offset past the end": _padded(_doc(_entry(offset=1 << 40))),
    "nbytes past the end": _padded(_doc(_entry(shape=[1 << 20], nbytes=8 << 20))),
    "object dtype": _padded(_doc(_entry(dtype="O"))),
    "unicode dtype": _padded(_doc(_entry(dtype="<U4"))),
    "dtype not a string": _padded(_doc(_entry(dtype=["int64"]))),
    "crc missing": _padded(_doc(_entry(crc32=...))),
    "crc a string": _padded(_doc(_entry(crc32="0"))),
    "wrong crc": _padded(_doc(_entry(crc32=1))),
    "name a list": _padded(_doc(_entry(name=["keys/emb"]))),
    "name missing": _padded(_doc(_entry(name=...))),
    "entry a string": _padded(_doc("keys/emb")),  # type: ignore[arg-type]
    "entry null": _padded(_doc(None)),  # type: ignore[arg-type]
    "offset a float": _padded(_doc(_entry(offset=256.5))),
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_each_malformed_header_is_refused(server: ShardServer, name: str) -> None:
    assert assert_refused(server, "Pull", HEADERS[name]) == "InputError"


def test_the_well_formed_hand_made_container_is_accepted() -> None:
    """The header tests above differ from a valid request in one field only."""
    msg = codec.decode(_padded(_doc(_entry())))
    np.testing.assert_array_equal(msg.keys("emb"), np.arange(4))


# -- over gRPC ------------------------------------------------------------------------------

def test_malformed_requests_over_grpc_are_answered_and_the_shard_keeps_serving() -> None:
    srv = ShardServer(_seeded_shard()).start()
    client = ByteClient(srv.address, "kraken.ps.Shard", timeout=10)
    try:
        before = fingerprint(srv)
        bad = [("Pull", encoded(PULL_ONLY["train a string"](pull_request()))),
               ("Push", encoded(PUSH_ONLY["more keys than grads"](push_request()))),
               ("Push", encoded(push_request())[:-9]),
               ("Pull", HEADERS["huge shape"]),
               ("Stats", b"\x00" * 40)]
        for method, payload in bad:
            reply = codec.decode(client.call(method, payload), "reply")
            assert reply.meta["error"]["type"] in errors.__all__
        assert fingerprint(srv) == before and srv.internal_errors == 0
        ok = codec.decode(client.call("Pull", encoded(pull_request())), "reply")
        assert ok.arrays["rows/emb"].shape == (KEYS.size, 4)
        assert fingerprint(srv) != before
    finally:
        client.close()
        srv.stop(0)


def test_checkpoint_paths_outside_the_root_are_refused(tmp_path: Any) -> None:
    srv = ShardServer(_seeded_shard(), checkpoint_root=tmp_path / "root")
    try:
        for where in ["/etc", str(tmp_path / "root" / ".." / "elsewhere"), "", 7]:
            err = assert_refused(srv, "Save", codec.encode({"directory": where}))
            assert err == "InputError"
        assert not (tmp_path / "elsewhere").exists()
    finally:
        srv.stop(0)
