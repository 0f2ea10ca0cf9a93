"""The Kubernetes manifests in deploy/ (docs/scaling.md) parse, and the router's shard list names every
replica of every shard StatefulSet, in shard order, by the DNS name its headless Service gives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    """Every YAML document of the manifests directly in `directory` (test_deploy_nats_manifests.py
    reads deploy/nats/ with it)."""
    found: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
            assert {"apiVersion", "kind", "metadata"} <= document.keys(), (
                f"{path.name}: {document.get('kind')}"
            )
            found.append(document)
    return found


def by_kind(kind: str, directory: Path = DEPLOY) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents(directory) if doc["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_manifests_parse_and_hold_the_expected_objects() -> None:
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds.count("StatefulSet") >= 1
    assert kinds.count("Deployment") == 1
    assert "ConfigMap" in kinds


def test_every_shard_statefulset_has_a_headless_service_and_probes_readiness() -> None:
    services = by_kind("Service")
    for name, workload in by_kind("StatefulSet").items():
        service = services[workload["spec"]["serviceName"]]
        assert service["spec"]["clusterIP"] == "None", name
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"] == labels, name
        assert service["spec"]["selector"] == labels, name
        main = container(workload)
        assert main["command"] == ["steer", "serve"], name
        assert main["readinessProbe"]["exec"]["command"][:2] == ["steer", "probe"], name
        assert "--data" in main["args"], name


def test_router_shard_list_names_every_replica_in_shard_order() -> None:
    shards = by_kind("StatefulSet")
    config = by_kind("ConfigMap")["steer-router-shards"]
    listed = json.loads(config["data"]["shards.json"])["shards"]
    assert len(listed) == len(shards)
    for index, replicas in enumerate(listed):
        workload = shards[f"steer-shard-{index}"]
        port = container(workload)["ports"][0]["containerPort"]
        service = workload["spec"]["serviceName"]
        expected = [f"steer-shard-{index}-{r}.{service}:{port}" for r in range(workload["spec"]["replicas"])]
        assert replicas == expected
    router = by_kind("Deployment")["steer-router"]
    main = container(router)
    assert main["command"] == ["steer", "route"]
    shards_file = main["args"][main["args"].index("--shards-file") + 1]
    mounts = {mount["name"]: mount["mountPath"] for mount in main["volumeMounts"]}
    assert shards_file == mounts["shards"] + "/shards.json"
    assert main["readinessProbe"]["exec"]["command"][:2] == ["steer", "probe"]
    service = by_kind("Service")["steer"]
    assert service["spec"]["selector"] == router["spec"]["template"]["metadata"]["labels"]
