"""TLS through the router (docs/scaling.md): shards serving `--tls-cert`, a router with `--shard-tls-ca`
(shards named by host name and by IP address) and its own `--tls-cert` for clients; a router that does
not speak TLS to TLS shards finds them unavailable; a bad CA file stops it at start."""

from __future__ import annotations

import shutil
import ssl
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
    arguments = ["--dimension", "2", "--admin-token", DEFAULT_TOKEN, "--sync-writes", "false", *tls_flags]
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
