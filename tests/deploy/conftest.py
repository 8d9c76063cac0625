"""Fixtures of the deployment checks: the rendered overlays and what the code exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import OVERLAYS, SERIES_SUFFIXES, copy_deploy, import_code, render


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_deploy(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="session")
def rendered(deploy_copy: Path) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered with kustomize."""
    return {name: render(deploy_copy / "k8s" / "overlays" / d) for name, d in OVERLAYS.items()}


@pytest.fixture(scope="session")
def rendered_monitoring(deploy_copy: Path) -> list[dict[str, Any]]:
    return render(deploy_copy / "prometheus")


@pytest.fixture(scope="session")
def exported_series() -> frozenset[str]:
    """Every series name the server can expose: the registry after importing every code module."""
    from prometheus_client import REGISTRY

    import_code()
    names = {family.name + suffix for family in REGISTRY.collect() for suffix in SERIES_SUFFIXES[family.type]}
    assert "voicenav_draining" in names and "voicenav_asr_latency_seconds_bucket" in names
    return frozenset(names)
