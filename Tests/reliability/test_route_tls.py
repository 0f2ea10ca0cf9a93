"""TLS through the router (docs/scaling.md): shards serving `--tls-cert`, a router with `--shard-tls-ca`
(shards named by host name and by IP address) and its own `--tls-cert` for clients; a router that does
not speak TLS to TLS shards finds them unavailable; a bad CA file stops it at start; a router that
trusts another CA, or reaches a shard by a name its certificate does not carry, is refused by
certificate verification (the shard is unavailable, nothing is sent to it)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import DEFAULT_TOKEN, REPO, HarnessError, Router, Server
from test_tls import make_certificate

sys.path.insert(0, str(REPO / "clients" / "python"))
from steer_client import SteerClient


def test_router_speaks_tls_to_clients_and_to_shards(binary: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="steer-route-tls-"))
    cert, key = make_certificate(workdir, "cluster")
    tls_flags = ["--tls-cert", str(cert), "--tls-key", str(key)]
    arguments = [
        "--dimension",
        "2",
        "--admin-token",
        DEFAULT_TOKEN,
        "--public-reads",
        "true",
        "--sync-writes",
        "false",
        *tls_flags,
    ]
    shards = [Server(binary, str(workdir / f"shard{index}"), arguments) for index in range(2)]
    processes: list[Server] = list(shards)
    try:
        shard_flags = ["--shard", f"localhost:{shards[0].port}", "--shard", f"127.0.0.1:{shards[1].port}"]
        router = Router(
            binary, str(workdir / "router.log"), [*shard_flags, "--shard-tls-ca", str(cert), *tls_flags]
        )
        processes.append(router)
        context = ssl.create_default_context(cafile=str(cert))
        with SteerClient(port=router.port, token=DEFAULT_TOKEN, tls=context) as client:
            items = [{"id": index, "vector": [index / 40, 1 - index / 40]} for index in range(40)]
            assert client.upsert(items) == 40
            hits = client.search([1.0, 0.0], k=3)
            assert [hit["id"] for hit in hits] == [39, 38, 37]
            stats = client.stats()
            assert stats["unavailable_shards"] == 0
            assert [shard["readable_replicas"] for shard in stats["shards"]] == [1, 1]
            assert stats["server"]["tls"] is True

        # Without --shard-tls-ca the router cannot talk to TLS shards: every shard is unavailable.
        plain = Router(binary, str(workdir / "plain.log"), [*shard_flags, "--shard-timeout-ms", "2000"])
        processes.append(plain)
        with SteerClient(port=plain.port) as client:
            assert client.stats()["unavailable_shards"] == 2
            answer = client.send_raw(b'{"op":"search","vector":[1,0],"k":3}')
            assert answer["ok"] is False and answer["error"]["code"] == "unavailable"

        # A CA file that is not PEM stops the router at start with a message naming it.
        bogus = workdir / "bogus.pem"
        bogus.write_text("not a certificate\n")
        try:
            Router(binary, str(workdir / "bogus.log"), [*shard_flags, "--shard-tls-ca", str(bogus)])
            raise AssertionError("the router started with a bad CA file")
        except HarnessError as error:
            assert "bogus.pem" in str(error)
    finally:
        for process in processes:
            if process.alive():
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def certificate_for(directory: Path, name: str, subject_alt_names: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) naming exactly `subject_alt_names`."""
    certificate, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(certificate), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName={subject_alt_names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


def shard_stats(router: Router) -> dict:
    with SteerClient(port=router.port) as client:
        return client.stats()


def test_router_refuses_a_wrong_ca_and_a_wrong_host_name(binary: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="steer-route-tls-refused-"))
    # The shard's certificate names only the host name `localhost`, not the address 127.0.0.1.
    cert, key = certificate_for(workdir, "shard", "DNS:localhost")
    stranger, _ = certificate_for(workdir, "stranger", "DNS:localhost,IP:127.0.0.1")
    arguments = ["--dimension", "2", "--sync-writes", "false", "--tls-cert", str(cert), "--tls-key", str(key)]
    shard = Server(binary, str(workdir / "shard"), arguments)
    processes: list[Server] = [shard]
    try:
        with SteerClient(
            host="localhost", port=shard.port, tls=ssl.create_default_context(cafile=str(cert))
        ) as client:
            assert client.upsert([{"id": 1, "vector": [1.0, 0.0]}]) == 1

        def router(name: str, host: str, ca: Path) -> Router:
            flags = [
                "--shard",
                f"{host}:{shard.port}",
                "--shard-tls-ca",
                str(ca),
                "--shard-timeout-ms",
                "2000",
            ]
            started = Router(binary, str(workdir / f"{name}.log"), flags)
            processes.append(started)
            return started

        # The control: the right CA and the name the certificate carries.
        good = router("good", "localhost", cert)
        assert shard_stats(good)["unavailable_shards"] == 0
        with SteerClient(port=good.port) as client:
            assert [hit["id"] for hit in client.search([1.0, 0.0], k=1)] == [1]

        # Another CA (a certificate that names both host and address, but that the shard does not hold),
        # and the right CA with an address the certificate does not name: both refused.
        for name, host, ca in (("wrong-ca", "localhost", stranger), ("wrong-host", "127.0.0.1", cert)):
            refused = router(name, host, ca)
            stats = shard_stats(refused)
            assert stats["unavailable_shards"] == 1, (name, stats)
            replica = stats["shards"][0]["replicas"][0]
            assert replica["up"] is False and replica["failures"] >= 1, replica
            with SteerClient(port=refused.port) as client:
                answer = client.send_raw(b'{"op":"search","vector":[1,0],"k":1}')
                assert answer["ok"] is False and answer["error"]["code"] == "unavailable", answer
                answer = client.send_raw(b'{"op":"upsert","items":[{"id":2,"vector":[0,1]}]}')
                assert answer["ok"] is False and answer["error"]["code"] == "unavailable", answer
        # Nothing reached the shard through the refused routers: item 2 was never written.
        with SteerClient(
            host="localhost", port=shard.port, tls=ssl.create_default_context(cafile=str(cert))
        ) as client:
            assert [item["id"] for item in client.get([1, 2])] == [1]
    finally:
        for process in processes:
            if process.alive():
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
