"""Self-signed certificates for TLS tests, made with the ``openssl`` command line.

``self_signed(directory, names)`` writes ``cert.pem`` and ``key.pem`` for a certificate
whose subject alternative names are ``names`` (``DNS:localhost``, ``IP:127.0.0.1``, ...).
Tests call :func:`require_openssl` first: it skips them, saying why, where neither the
``cryptography`` package nor ``openssl`` is available (only ``openssl`` is used here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def require_openssl() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("TLS test needs the openssl command line to make a self-signed "
                    "certificate, and none is installed")
    return exe


def self_signed(directory: Path, names: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1"),
                common_name: str = "localhost") -> tuple[Path, Path]:
    """``(cert.pem, key.pem)`` of a fresh RSA-2048 certificate valid for one day."""
    exe = require_openssl()
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([exe, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}",
                    "-addext", f"subjectAltName={','.join(names)}"],
                   check=True, capture_output=True, timeout=60)
    return cert, key
