"""TLS on the protocol port (`--tls-cert`/`--tls-key`, docs/configuration.md "TLS"): a TLS client is
served, a plaintext client is refused without harming the server, and bad certificate files stop the
server at start with a message naming the file. Certificates are made with the openssl command."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import DEFAULT_TOKEN, REPO, Server

sys.path.insert(0, str(REPO / "clients" / "python"))
from steer_client import SteerClient


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    certificate, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="steer-tls-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def certificate(workdir: Path) -> tuple[Path, Path]:
    return make_certificate(workdir, "server")


@pytest.fixture()
def tls_server(binary: str, workdir: Path, certificate: tuple[Path, Path]) -> Iterator[Server]:
    cert, key = certificate
    data = tempfile.mkdtemp(prefix="data-", dir=workdir)
    server = Server(
        binary,
        data,
        [
            "--dimension",
            "2",
            "--admin-token",
            DEFAULT_TOKEN,
            "--public-reads",
            "true",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
    )
    yield server
    server.kill()


def trusting(certificate: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate))


def test_tls_client_is_served(tls_server: Server, certificate: tuple[Path, Path]) -> None:
    with SteerClient(port=tls_server.port, token=DEFAULT_TOKEN, tls=trusting(certificate[0])) as client:
        client.upsert([{"id": "a", "vector": [1.0, 0.0]}, {"id": "b", "vector": [0.0, 1.0]}])
        hits = client.search([0.9, 0.1], k=1)
        assert [hit["id"] for hit in hits] == ["a"]
        assert client.stats()["server"]["tls"] is True


def test_plaintext_client_is_refused_and_server_keeps_serving(
    tls_server: Server, certificate: tuple[Path, Path]
) -> None:
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as plain:
        plain.sendall(b'{"id":1,"op":"ping"}\n')
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    assert b'"ok":true' not in received  # no plaintext answer, the connection was closed
    # A client that does not trust the certificate fails its own check; the server is unharmed.
    with pytest.raises(ssl.SSLCertVerificationError):
        SteerClient(port=tls_server.port, tls=ssl.create_default_context())
    with SteerClient(port=tls_server.port, tls=trusting(certificate[0])) as client:
        client.ping()
        assert client.stats()["server"]["connections"] == 1
    assert tls_server.alive()


def start_failure(binary: str, workdir: Path, *arguments: str) -> tuple[int, str]:
    data = tempfile.mkdtemp(prefix="data-", dir=workdir)
    result = subprocess.run(
        [binary, "serve", "--port", "0", "--data", data, "--dimension", "2", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_bad_tls_files_stop_the_server_at_start(
    binary: str, workdir: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    other_cert, other_key = make_certificate(workdir, "other")
    garbage = workdir / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    missing = workdir / "missing.pem"
    cases = [
        (["--tls-cert", str(missing), "--tls-key", str(key)], "missing.pem"),
        (["--tls-cert", str(cert), "--tls-key", str(missing)], "missing.pem"),
        (["--tls-cert", str(garbage), "--tls-key", str(key)], "garbage.pem"),
        (["--tls-cert", str(cert), "--tls-key", str(garbage)], "garbage.pem"),
        (["--tls-cert", str(cert), "--tls-key", str(other_key)], "other-key.pem"),
    ]
    for arguments, named in cases:
        status, output = start_failure(binary, workdir, *arguments)
        assert status == 2, (arguments, output)
        assert named in output and "listening" not in output, (arguments, output)
    status, output = start_failure(binary, workdir, "--tls-cert", str(other_cert))
    assert status != 0 and "--tls-key" in output


def open_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_connections_refused_at_the_limit_do_not_hold_descriptors(
    binary: str, workdir: Path, certificate: tuple[Path, Path]
) -> None:
    """At `--max-connections`, a TLS server closes each extra connection at once (no plaintext answer
    that would wait for a handshake the client never starts), so refused clients cannot pile up open
    descriptors."""
    cert, key = certificate
    data = tempfile.mkdtemp(prefix="data-", dir=workdir)
    server = Server(
        binary,
        data,
        ["--dimension", "2", "--max-connections", "2", "--tls-cert", str(cert), "--tls-key", str(key)],
    )
    try:
        with (
            SteerClient(port=server.port, tls=trusting(cert)) as first,
            SteerClient(port=server.port, tls=trusting(cert)) as second,
        ):
            first.ping()
            second.ping()
            baseline = open_descriptors(server.pid)
            extra = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(30)]
            closed = 0
            for connection in extra:
                connection.settimeout(5)
                try:
                    if connection.recv(4096) == b"":
                        closed += 1
                except ConnectionResetError:
                    closed += 1
            assert closed == 30, f"only {closed} of 30 refused connections were closed by the server"
            for connection in extra:
                connection.close()
            assert open_descriptors(server.pid) <= baseline + 2
            first.ping()
            second.ping()
    finally:
        server.kill()
