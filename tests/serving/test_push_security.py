"""The serving push channel under a token and TLS, as the shards' wire.

In process: a pusher with the token (over TLS) brings its server to the trainer's model;
a pusher without it is refused (UNAUTHENTICATED) before anything is decoded, and its
server stays empty. As a user runs it: ``kraken serve --push-port 0 --token-file F
--tls-cert C --tls-key K`` fed by ``kraken train --push ADDR --push-token-file F
--push-tls-cert C``; and ``kraken serve`` refuses a public push bind without a token.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("grpc")

from kraken.errors import ConfigError, TransportError  # noqa: E402
from kraken.ps.wire import ByteClient, Security  # noqa: E402
from kraken.serving import FanoutTransport, Replica  # noqa: E402
from kraken.serving.push import SERVICE, PushTransport, serve_push  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.ps.certs import self_signed  # noqa: E402
from tests.ps.cluster import KRAKEN  # noqa: E402
from tests.serving.helpers import probe_records, publishing_trainer, reference_scores  # noqa: E402

TOKEN = "push-token-51a0"


def test_a_pusher_needs_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = self_signed(tmp_path / "certs")
    guarded = Security(token=TOKEN, tls_cert=str(cert), tls_key=str(key))
    good_server, good_rx = serve_push(Replica(), security=guarded)
    bad_server, bad_rx = serve_push(Replica(), security=Security(token=TOKEN))
    good = PushTransport([good_server.address],
                         security=Security(token=TOKEN, tls_cert=str(cert)))
    bad = PushTransport([bad_server.address], retry_interval=60.0)  # no token
    tr, pub = publishing_trainer(tmp_path / "unused", n_records=4000)
    pub.transport = FanoutTransport([good, bad])
    try:
        with caplog.at_level(logging.WARNING, logger="kraken.wire"):
            tr.run()
            assert good.flush() and bad.flush()
        assert good_rx.replica.version == pub.version
        np.testing.assert_array_equal(good_rx.replica.predict_records(probe_records(16)).scores,
                                      reference_scores(tr, probe_records(16)))
        assert good_server.refused == 0
        assert not bad_rx.replica.ready and bad_rx.errors == 0 and bad_rx.gaps == 0
        assert bad_server.refused >= 1
        assert all(s["acked"] == 0 and "UNAUTHENTICATED" in s["last_error"]
                   for s in bad.stats())
        assert TOKEN not in caplog.text and "refused Apply" in caplog.text
    finally:
        good.close()
        bad.close()
        good_server.stop()
        bad_server.stop()


def test_a_plaintext_or_tokenless_status_call_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "certs")
    server, _ = serve_push(Replica(), security=Security(token=TOKEN, tls_cert=str(cert),
                                                        tls_key=str(key)))
    clients = {"plain": ByteClient(server.address, SERVICE, timeout=5),
               "tls, no token": ByteClient(server.address, SERVICE, timeout=5,
                                           security=Security(tls_cert=str(cert))),
               "both": ByteClient(server.address, SERVICE, timeout=5,
                                  security=Security(token=TOKEN, tls_cert=str(cert)))}
    try:
        for name in ("plain", "tls, no token"):
            with pytest.raises(TransportError):
                clients[name].call("Status", b"")
        assert b'"ready": false' in clients["both"].call("Status", b"")
        assert server.refused == 1  # the plaintext call never got as far as the token check
    finally:
        for c in clients.values():
            c.close()
        server.stop()


def test_serve_push_refuses_a_public_bind_without_a_token() -> None:
    with pytest.raises(ConfigError, match="requires a shared token"):
        serve_push(Replica(), host="0.0.0.0")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_kraken_serve_and_train_with_token_and_tls(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nsource = "synthetic"\nn_records = 4000\nn_fields = 3\nn_dense = 2\n'
                   '[model]\nname = "fm"\n[tables.emb]\ndim = 4\ncapacity = 20000\n'
                   '[trainer]\nbatch_size = 512\n')
    cert, key = self_signed(tmp_path / "certs")
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    serve = subprocess.Popen([*KRAKEN, "serve", "--push-port", "0", "--port", "0",
                              "--token-file", str(token), "--tls-cert", str(cert),
                              "--tls-key", str(key)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=ROOT, env=_env())
    try:
        line = serve.stdout.readline() if serve.stdout else ""
        assert "receiving pushes on 127.0.0.1:" in line, (line, serve.stderr)
        url, addr = line.split()[2], line.split("pushes on ")[1].split(";")[0]
        out = subprocess.run([*KRAKEN, "train", "--config", str(cfg), "--run-dir",
                              str(tmp_path / "run"), "--push", addr,
                              "--push-token-file", str(token), "--push-tls-cert", str(cert)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())
        assert out.returncode == 0, out.stderr
        last = int(out.stdout.split("last ")[1].split()[0].rstrip(","))
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert info["version"] == last and info["sync"]["errors"] == 0, info
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(timeout=30)
    assert TOKEN not in (serve.stderr.read() if serve.stderr else "")


def test_kraken_serve_refuses_a_public_push_bind_without_a_token() -> None:
    out = subprocess.run([*KRAKEN, "serve", "--push-port", "0", "--port", "0",
                          "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=_env())
    assert out.returncode != 0 and "requires a shared token" in out.stderr + out.stdout
    assert "receiving pushes" not in out.stdout
