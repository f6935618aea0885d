"""https:// engines: the router speaks TLS on requests and probes alike, checks certificates,
and never sends the engine API key in clear text to an https:// URL.

The engine is the fake engine serving HTTPS with a certificate made for the test (openssl).
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.faults.report import MatrixRecorder, MatrixRow
from tests.faults.stack import call, engine_view, request_body, wait_for
from tests.harness.router_proc import RouterProcess

pytestmark = pytest.mark.faults
# Clients present the router's key; the router presents the engine key to engines.
KEY_ENV = {"ENGINE_KEY": "engine-secret", "ROUTER_KEY": "client-key"}
CLIENT_AUTH = {"authorization": "Bearer client-key"}


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, which also serves as its own CA."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    argv += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        argv,
        check=True,
        capture_output=True,
    )
    return cert, key


def _router(url: str, *extra: str) -> RouterProcess:
    args = ["--static-backends", url, "--static-models", "tiny", *extra]
    args += ["--engine-api-key-env", "ENGINE_KEY", "--api-key-env", "ROUTER_KEY"]
    args += ["--engine-scrape-interval", "0.3"]
    return RouterProcess(args, KEY_ENV)


@pytest.mark.parametrize("client", ["httptools", "aiohttp"])
def test_https_engine_is_spoken_to_in_tls_with_the_key(
    fake_engine_factory: Any, cert: tuple[Path, Path], matrix: MatrixRecorder, client: str
) -> None:
    engine = fake_engine_factory(tls_cert=str(cert[0]), tls_key=str(cert[1]))
    assert engine.url.startswith("https://")
    flags = ["--engine-tls-ca-file", str(cert[0]), "--upstream-client", client]
    with _router(engine.url, *flags).start() as router:
        plain = call(router.url, request_body(max_tokens=3), headers=CLIENT_AUTH)
        stream = call(router.url, request_body(max_tokens=3, stream=True), headers=CLIENT_AUTH)
        row = engine_view(router)[engine.url]
    stats = engine.stats()
    seen_auth = {r["headers"].get("authorization") for r in stats["recent"]}
    matrix.add(
        MatrixRow(
            f"https:// engine with its CA given ({client} client)",
            "aggregated",
            "requests and probes in TLS with the engine key; 200",
            f"{plain.status}/{stream.status}; healthy={row['healthy']}; probe auth "
            f"{sorted(stats['probe_auth'])}",
            plain.elapsed,
            1.5,
        )
    )
    assert plain.status == 200 and stream.status == 200, plain.body
    assert stream.events[-1] == b"[DONE]"
    assert seen_auth == {"Bearer engine-secret"}
    assert row["healthy"] and row["load_source"] == "engine"
    assert set(stats["probe_auth"]) == {"Bearer engine-secret"}


class _Eavesdropper:
    """A plain TCP listener pretending to be an https:// engine: keeps what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                while data := conn.recv(65536):
                    self.received += data
            except OSError:
                pass
            conn.close()


def test_no_key_in_clear_text_to_an_https_url(matrix: MatrixRecorder) -> None:
    spy = _Eavesdropper()
    url = f"https://127.0.0.1:{spy.port}"
    with _router(url, "--connect-timeout", "1", "--first-byte-timeout", "1").start(
        wait_ready=False
    ) as router:
        answer = call(router.url, request_body(max_tokens=2), headers=CLIENT_AUTH)
        assert wait_for(lambda: not engine_view(router)[url]["healthy"], 5)
    spy.sock.close()
    leaked = b"engine-secret" in spy.received or b"POST /v1" in spy.received
    matrix.add(
        MatrixRow(
            "https:// URL answered by a plain-text listener",
            "aggregated",
            "TLS handshake fails: 502, engine out of rotation, no key or request in clear",
            f"{answer.status} {answer.error_code}; clear text seen: {leaked}",
            answer.elapsed,
            2.5,
        )
    )
    assert not leaked, bytes(spy.received[:200])
    assert answer.status in (502, 503), answer.body


def test_an_untrusted_certificate_is_refused_unless_verification_is_off(
    fake_engine_factory: Any, cert: tuple[Path, Path], matrix: MatrixRecorder
) -> None:
    engine = fake_engine_factory(tls_cert=str(cert[0]), tls_key=str(cert[1]))
    with _router(engine.url, "--engine-scrape-interval", "0.3").start(wait_ready=False) as router:
        refused = call(router.url, request_body(max_tokens=2), headers=CLIENT_AUTH)
        out = wait_for(lambda: not engine_view(router)[engine.url]["healthy"], 5)
        error = engine_view(router)[engine.url]["last_error"]
        log = router.log_text()
    with _router(engine.url, "--no-engine-tls-verify").start() as router:
        unverified = call(router.url, request_body(max_tokens=2), headers=CLIENT_AUTH)
    matrix.add(
        MatrixRow(
            "https:// engine with a certificate the router does not trust",
            "aggregated",
            "refused (502, out of rotation); --no-engine-tls-verify accepts it",
            f"{refused.status} {refused.error_code}; then {unverified.status}",
            refused.elapsed,
            1.5,
        )
    )
    assert refused.status == 502 and refused.error_code == "engine_unreachable", refused.body
    # The reason is in the router's log; the client's message names no internal engine detail.
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert b"127.0.0.1" not in refused.body
    assert out and "certificate" in error.lower()
    assert unverified.status == 200
