"""deploy/cluster/: the shared-mode Deployment, its Redis, and the two-replica compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from driftmon.cli import main as driftmon_main

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "deploy" / "cluster"
KUBERNETES = CLUSTER / "kubernetes"
IMAGE_REFERENCE = "/opt/driftmon/lib/python3.11/site-packages/driftmon/data/shop_reference.ndjson"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and doc.get("kind"), path
            found.append(doc)
    return found


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [
        d for d in documents()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return doc


def check(config_text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """``driftmon check`` of a deploy config, the image's reference path made this checkout's."""
    assert IMAGE_REFERENCE in config_text
    local = REPO / "driftmon" / "data" / "shop_reference.ndjson"
    path = tmp_path / "driftmon.yaml"
    path.write_text(config_text.replace(IMAGE_REFERENCE, str(local)))
    assert driftmon_main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
    config: dict[str, Any] = yaml.safe_load(config_text)
    assert config["cluster"]["mode"] == "shared"
    return config


def test_the_kustomization_lists_every_manifest() -> None:
    (kustomization,) = [d for d in documents() if d["kind"] == "Kustomization"]
    on_disk = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == on_disk


def test_the_deployment_runs_interchangeable_replicas_on_the_configmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_text = by_kind("ConfigMap")["data"]["driftmon.yaml"]
    config = check(config_text, tmp_path, capsys)
    deployment = by_kind("Deployment")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:3] == ["run", "-c", "/etc/driftmon/driftmon.yaml"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert "volumeClaimTemplates" not in deployment["spec"]  # the state lives in Redis
    service = by_kind("Service", "driftmon")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    redis_service = by_kind("Service", "driftmon-redis")
    assert config["cluster"]["redis"]["url"] == (
        f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    )
    redis = by_kind("StatefulSet", "driftmon-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"


def test_the_compose_file_runs_two_replicas_and_redis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compose = yaml.safe_load((CLUSTER / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = [name for name in services if name.startswith("driftmon")]
    assert len(replicas) == 2
    assert {services[name]["image"] for name in replicas} == {"driftmon:0.1.0"}
    assert len({services[name]["ports"][0] for name in replicas}) == 2
    for name in replicas:
        (mount,) = services[name]["volumes"]
        source, target = mount.split(":")[:2]
        assert (CLUSTER / source).resolve() == CLUSTER / "driftmon.yaml"
        assert services[name]["command"] == ["run", "-c", target]
    config = check((CLUSTER / "driftmon.yaml").read_text(), tmp_path, capsys)
    assert config["cluster"]["redis"]["url"] == "redis://redis:6379/0"
    assert "--appendonly" in services["redis"]["command"]
