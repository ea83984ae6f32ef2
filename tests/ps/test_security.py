"""Token and TLS on the shard wire, over real sockets (in-process servers and `kraken ps`).

A missing or wrong token is refused with UNAUTHENTICATED before any handler runs: the
client sees a :class:`TransportError` naming the shard (not retried), the server logs
the refusal without the token and counts it. Non-loopback binds need a token. TLS is
gRPC's: a client trusting the certificate works, a plaintext client cannot talk to it.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc")

from kraken.errors import ConfigError, TransportError  # noqa: E402
from kraken.optim import SGD  # noqa: E402
from kraken.ps import Shard  # noqa: E402
from kraken.ps.client import RemoteShard  # noqa: E402
from kraken.ps.server import ShardServer  # noqa: E402
from kraken.ps.wire import ByteServer, Security  # noqa: E402
from kraken.table import TableConfig  # noqa: E402
from tests.ps.certs import self_signed  # noqa: E402
from tests.ps.cluster import KRAKEN, ROOT, Cluster, write_run_config  # noqa: E402

TOKEN = "s3cret-token-9f2c"
TABLES = {"emb": TableConfig(dim=4, capacity=1000, optimizer=SGD(lr=0.5))}


def _shard() -> Shard:
    return Shard(TABLES)


@pytest.fixture
def server() -> Iterator[ShardServer]:
    srv = ShardServer(_shard(), security=Security(token=TOKEN)).start()
    try:
        yield srv
    finally:
        srv.stop()


def _client(address: str, **sec: str | None) -> RemoteShard:
    return RemoteShard(address, index=0, retries=3, backoff=0.01, timeout=10,
                       security=Security(**sec) if sec else None)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_a_missing_or_wrong_token_is_refused_once_and_logged_without_the_token(
        server: ShardServer, token: str | None, caplog: pytest.LogCaptureFixture) -> None:
    client = _client(server.address, token=token)
    try:
        with caplog.at_level(logging.WARNING, logger="kraken.wire"), \
                pytest.raises(TransportError) as err:
            client.pull({"emb": np.arange(3, dtype=np.int64)}, train=True, now=1)
    finally:
        client.close()
    text = str(err.value)
    assert f"shard 0 at {server.address}" in text and "UNAUTHENTICATED" in text
    assert "after 1 attempt(s)" in text  # never retried
    assert server.refused == 1  # one call reached the server: no retry
    assert server.shard.stats()["emb"].live_rows == 0  # nothing ran
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert ("missing" if token is None else "wrong") in refusals[0]
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_the_right_token_works(server: ShardServer) -> None:
    client = _client(server.address, token=TOKEN)
    try:
        k = np.arange(5, dtype=np.int64)
        rows = client.pull({"emb": k}, train=True, now=1)["emb"]
        client.push({"emb": (k, np.ones((5, 4), np.float32))}, now=2)
        after = client.pull({"emb": k})["emb"]
    finally:
        client.close()
    np.testing.assert_allclose(after, rows - 0.5)
    assert server.refused == 0


def test_the_token_is_not_printed_with_the_settings() -> None:
    assert TOKEN not in repr(Security(token=TOKEN)) and TOKEN not in str(Security(token=TOKEN))


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_binding_beyond_loopback_without_a_token_is_refused_before_listening(
        host: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="requires a shared token"):
        ByteServer("x", {}, host=host)
    with pytest.raises(ConfigError, match="requires a shared token"):
        ShardServer(_shard(), host=host, checkpoint_root=tmp_path)


def test_binding_all_addresses_with_a_token_serves_on_loopback(tmp_path: Path) -> None:
    srv = ShardServer(_shard(), host="0.0.0.0", security=Security(token=TOKEN),
                      checkpoint_root=tmp_path).start()
    try:
        client = _client(f"127.0.0.1:{srv.port}", token=TOKEN)
        try:
            assert client.info().index == 0
        finally:
            client.close()
        anonymous = _client(f"127.0.0.1:{srv.port}")
        try:
            with pytest.raises(TransportError, match="UNAUTHENTICATED"):
                anonymous.info()
        finally:
            anonymous.close()
    finally:
        srv.stop()


def test_a_token_file_must_exist_and_not_be_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="token file"):
        Security.from_files(str(tmp_path / "absent"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Security.from_files(str(tmp_path / "empty"))
    (tmp_path / "t").write_text(f"  {TOKEN}\n")
    assert Security.from_files(str(tmp_path / "t")).token == TOKEN


# -- TLS ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("certs")
    return {"ip": self_signed(base / "ip"),
            "dns": self_signed(base / "dns", names=("DNS:localhost",))}


def test_tls_client_trusting_the_certificate_works_and_plaintext_fails(
        certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["ip"]
    srv = ShardServer(_shard(), security=Security(tls_cert=str(cert), tls_key=str(key))
                      ).start()
    try:
        tls = _client(srv.address, tls_cert=str(cert))
        plain = RemoteShard(srv.address, index=0, retries=0, timeout=5)
        try:
            k = np.arange(4, dtype=np.int64)
            assert tls.pull({"emb": k}, train=True, now=1)["emb"].shape == (4, 4)
            with pytest.raises(TransportError, match=f"shard 0 at {srv.address}"):
                plain.info()
        finally:
            tls.close()
            plain.close()
        assert srv.shard.stats()["emb"].live_rows == 4
    finally:
        srv.stop()


def test_tls_with_a_certificate_for_another_name_needs_the_name_override(
        certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["dns"]  # valid for "localhost" only; dialled as 127.0.0.1
    srv = ShardServer(_shard(), security=Security(tls_cert=str(cert), tls_key=str(key))
                      ).start()
    try:
        strict = RemoteShard(srv.address, index=0, retries=0, timeout=5,
                             security=Security(tls_cert=str(cert)))
        named = _client(srv.address, tls_cert=str(cert), tls_server_name="localhost")
        try:
            with pytest.raises(TransportError):
                strict.info()
            assert named.info().index == 0
        finally:
            strict.close()
            named.close()
    finally:
        srv.stop()


def test_tls_needs_both_certificate_and_key(certs: dict[str, tuple[Path, Path]]) -> None:
    cert, _ = certs["ip"]
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        ByteServer("x", {}, security=Security(tls_cert=str(cert)))


# -- a real `kraken ps` process ----------------------------------------------------------

def test_kraken_ps_with_token_file_and_tls(tmp_path: Path,
                                           certs: dict[str, tuple[Path, Path]]) -> None:
    cfg = write_run_config(tmp_path / "run.toml", TABLES)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cert, key = certs["ip"]
    with Cluster(cfg, 1, extra=["--token-file", str(token_file), "--tls-cert", str(cert),
                                "--tls-key", str(key)]) as cluster:
        address = cluster.addresses[0]
        good = _client(address, token=TOKEN, tls_cert=str(cert))
        bad = _client(address, token="wrong-token", tls_cert=str(cert))
        try:
            assert good.info().index == 0
            with pytest.raises(TransportError, match="UNAUTHENTICATED"):
                bad.info()
        finally:
            good.close()
            bad.close()
        deadline = time.monotonic() + 30  # the refusal is logged by the shard process
        while time.monotonic() < deadline and \
                not any("refused" in line for line in cluster.logs[0]):
            time.sleep(0.05)
        log = "".join(cluster.logs[0])
    assert "refused Info" in log and "wrong token" in log
    assert TOKEN not in log and "wrong-token" not in log


def test_kraken_ps_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    import os

    cfg = write_run_config(tmp_path / "run.toml", TABLES)
    proc = subprocess.run([*KRAKEN, "ps", "--config", str(cfg), "--shard", "0", "--of", "1",
                           "--host", "0.0.0.0", "--checkpoint-root", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode != 0
    assert "requires a shared token" in proc.stdout + proc.stderr
    assert "ready on" not in proc.stdout


# -- a worker's [ps] section ----------------------------------------------------------

def test_a_worker_reaches_guarded_shards_through_its_ps_section(
        server: ShardServer, tmp_path: Path) -> None:
    from kraken.ps.config import PSConfig, build_ps

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with pytest.raises(TransportError, match="UNAUTHENTICATED"):
        build_ps(TABLES, PSConfig(mode="remote", shards=(server.address,), retries=0))
    ps = build_ps(TABLES, PSConfig(mode="remote", shards=(server.address,), retries=0,
                                   token_file=str(token_file)))
    try:
        k = np.arange(6, dtype=np.int64)
        assert ps.pull({"emb": k}, train=True, now=1)["emb"].shape == (6, 4)
    finally:
        ps.close()
    assert server.refused == 1
