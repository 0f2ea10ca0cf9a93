"""The Kubernetes manifests of a cluster on NATS (deploy/nats/, docs/scaling.md "Kubernetes with NATS")
parse, and their cross-references hold: every flag given to `steer serve`, `steer route` and
`steer-index` is one those commands define (read from their Swift sources), the shards and routers name
every NATS node at its client port, shard numbers and the shard count match the StatefulSets, the
stream copies match the NATS nodes, advertised addresses are the pods' stable DNS names, and every
Secret, claim, ConfigMap and mount a pod uses exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import test_deploy_manifests as deploy_manifests

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "nats"


def documents() -> list[dict[str, Any]]:
    return deploy_manifests.documents(DEPLOY)


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return deploy_manifests.by_kind(kind, DEPLOY)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def struct_body(source: str, name: str) -> str:
    start = re.search(rf"^struct {name}\b", source, re.MULTILINE)
    assert start, f"struct {name} not found"
    following = re.search(r"^(struct|extension|final class|enum) ", source[start.end() :], re.MULTILINE)
    return source[start.end() : start.end() + following.start()] if following else source[start.end() :]


def flags(path: Path, struct: str) -> set[str]:
    """The long options and flags ArgumentParser derives for `struct` (and its @OptionGroups)."""
    source = path.read_text()
    body = struct_body(source, struct)
    found: set[str] = set()
    for match in re.finditer(r"@(Option|Flag)(\((?:[^()]|\([^()]*\))*\))?\s*\n?\s*var (\w+)", body):
        custom = re.search(r'\.customLong\("([^"]+)"\)', match.group(2) or "")
        found.add("--" + (custom.group(1) if custom else kebab(match.group(3))))
    for group in re.finditer(r"@OptionGroup var \w+: (\w+)", body):
        for candidate in (REPO / "Sources" / "steer").glob("*.swift"):
            if re.search(rf"^struct {group.group(1)}\b", candidate.read_text(), re.MULTILINE):
                found |= flags(candidate, group.group(1))
    assert found, f"no options found in {struct}"
    return found


SERVE = flags(REPO / "Sources" / "steer" / "Serve.swift", "Serve")
ROUTE = flags(REPO / "Sources" / "steer" / "Route.swift", "Route")
INDEX_TOOL = REPO / "Tools" / "steer-index" / "SteerIndexTool.swift"


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def given_flags(args: list[str]) -> list[str]:
    return [arg for arg in args if arg.startswith("--")]


def nats_cluster() -> tuple[dict[str, Any], list[str]]:
    """The NATS StatefulSet and its nodes' client URLs, in pod order."""
    nats = by_kind("StatefulSet")["steer-nats"]
    service = nats["spec"]["serviceName"]
    ports = {port["name"]: port["containerPort"] for port in container(nats)["ports"]}
    urls = [f"nats://steer-nats-{i}.{service}:{ports['client']}" for i in range(nats["spec"]["replicas"])]
    return nats, urls


def follow_shards() -> list[dict[str, Any]]:
    shards = [doc for name, doc in by_kind("StatefulSet").items() if name.startswith("steer-follow-shard-")]
    return sorted(shards, key=lambda doc: int(doc["metadata"]["name"].rsplit("-", 1)[1]))


def test_manifests_parse_and_flags_exist() -> None:
    assert {"--follow", "--cluster", "--shard", "--shard-count", "--advertise", "--snapshot-dir"} <= SERVE
    assert {"--follow", "--cluster", "--shards-file"} <= ROUTE
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds.count("StatefulSet") == 1 + len(follow_shards())
    assert kinds.count("Job") == 1
    for workload in [*by_kind("StatefulSet").values(), *by_kind("Deployment").values()]:
        main = container(workload)
        command = main.get("command", [])
        known = {("steer", "serve"): SERVE, ("steer", "route"): ROUTE}.get(tuple(command))
        if known is None:
            continue
        unknown = [flag for flag in given_flags(main["args"]) if flag not in known]
        assert not unknown, f"{workload['metadata']['name']}: {' '.join(command)} has no {unknown}"


def test_nats_statefulset_routes_volumes_and_service() -> None:
    nats, _ = nats_cluster()
    assert nats["spec"]["replicas"] == 3
    service = by_kind("Service")[nats["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == nats["spec"]["template"]["metadata"]["labels"]
    main = container(nats)
    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert {port["name"]: port["targetPort"] for port in service["spec"]["ports"]} == ports
    volumes = {volume["name"]: volume for volume in pod_spec(nats)["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in main["volumeMounts"]}
    config_map = by_kind("ConfigMap")[volumes["config"]["configMap"]["name"]]
    config_file = option(main["args"], "-c")
    assert config_file == mounts["config"] + "/nats.conf"
    conf = config_map["data"]["nats.conf"]
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf)
    assert routes == [
        (f"steer-nats-{i}.{service['metadata']['name']}", str(ports["cluster"]))
        for i in range(nats["spec"]["replicas"])
    ]
    assert f"listen: 0.0.0.0:{ports['client']}" in conf
    assert f"listen: 0.0.0.0:{ports['cluster']}" in conf
    assert f"http: 0.0.0.0:{ports['monitor']}" in conf
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store and store.group(1).startswith(mounts["data"] + "/")
    claims = [template["metadata"]["name"] for template in nats["spec"]["volumeClaimTemplates"]]
    assert "data" in claims
    assert "$POD_NAME" in conf and any(env["name"] == "POD_NAME" for env in main["env"])


def test_following_shards_name_nats_their_shard_and_their_stable_address() -> None:
    nats, urls = nats_cluster()
    shards = follow_shards()
    assert len(shards) >= 1
    secrets = by_kind("Secret")
    claims = by_kind("PersistentVolumeClaim")
    for index, workload in enumerate(shards):
        name = workload["metadata"]["name"]
        assert name == f"steer-follow-shard-{index}"
        assert workload["spec"]["template"]["metadata"]["labels"]["shard"] == str(index)
        service = by_kind("Service")[workload["spec"]["serviceName"]]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == workload["spec"]["template"]["metadata"]["labels"]
        main = container(workload)
        args = main["args"]
        assert main["command"] == ["steer", "serve"]
        assert option(args, "--follow").split(",") == urls
        assert option(args, "--shard") == str(index)
        assert option(args, "--shard-count") == str(len(shards))
        assert option(args, "--stream-replicas") == str(nats["spec"]["replicas"])
        assert option(args, "--cluster") == "prod"
        port = main["ports"][0]["containerPort"]
        assert option(args, "--port") == str(port)
        assert option(args, "--advertise") == f"$(POD_NAME).{service['metadata']['name']}:{port}"
        assert any(
            env["name"] == "POD_NAME" and env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            for env in main["env"]
        )
        mounts = {mount["name"]: mount["mountPath"] for mount in main["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        token = option(args, "--admin-token-file")
        secret_volume = next(n for n, path in mounts.items() if token.startswith(path + "/"))
        secret = secrets[volumes[secret_volume]["secret"]["secretName"]]
        assert token.rsplit("/", 1)[1] in secret["stringData"]
        assert option(args, "--data").startswith(mounts["data"] + "/")
        assert option(args, "--snapshot-dir").startswith(mounts["snapshots"] + "/")
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        assert main["readinessProbe"]["exec"]["command"] == ["steer", "probe", "--port", str(port)]


def test_routers_read_the_bucket_of_the_same_cluster() -> None:
    _, urls = nats_cluster()
    router = by_kind("Deployment")["steer-follow-router"]
    main = container(router)
    args = main["args"]
    assert main["command"] == ["steer", "route"]
    assert option(args, "--follow").split(",") == urls
    assert option(args, "--cluster") == option(container(follow_shards()[0])["args"], "--cluster")
    assert "--shard" not in args and "--shards-file" not in args, "a router on NATS reads the shard map"
    service = by_kind("Service")["steer-follow"]
    assert service["spec"]["selector"] == router["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == main["ports"][0]["containerPort"]
    volumes = {volume["name"]: volume for volume in pod_spec(router)["volumes"]}
    for volume in volumes.values():
        assert volume["secret"]["secretName"] in by_kind("Secret")


def test_build_job_builds_one_generation_per_replica_with_existing_flags() -> None:
    job = by_kind("Job")["steer-build-generation"]
    shards = follow_shards()
    replicas = {doc["spec"]["replicas"] for doc in shards}
    assert len(replicas) == 1
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(shards) * replicas.pop()
    main = container(job)
    env = {item["name"]: item["value"] for item in main["env"]}
    assert int(env["REPLICAS"]) == shards[0]["spec"]["replicas"]
    script = main["args"][0]
    assert 'POD="steer-follow-shard-${SHARD}-${REPLICA}"' in script
    build = flags(INDEX_TOOL, "Build")
    verify = flags(INDEX_TOOL, "Verify")
    commands = 0
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:2] == ["steer-index", "build"]:
            assert not [w for w in given_flags(words) if w not in build], line
            commands += 1
        if words[:2] == ["steer-index", "verify"]:
            assert not [w for w in given_flags(words) if w not in verify], line
            commands += 1
    assert commands == 2
    mounts = {mount["name"]: mount["mountPath"] for mount in main["volumeMounts"]}
    assert "/snapshots/${POD}/${SNAPSHOT}" in script and mounts["snapshots"] == "/snapshots"
    shard_snapshots = option(container(shards[0])["args"], "--snapshot-dir")
    assert shard_snapshots == "/snapshots/$(POD_NAME)"
    claims = by_kind("PersistentVolumeClaim")
    for volume in pod_spec(job)["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
