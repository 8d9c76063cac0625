"""Container images built with buildah and run with podman as Kubernetes would run them.

The images come from `scripts/image.sh` (layer cache reused, so an unchanged tree rebuilds in seconds);
VOICENAV_IMAGE / VOICENAV_GPU_IMAGE name already-built images to use instead. Measurements (cold start,
idle RSS, stop time) are written to $VOICENAV_CTR_ROOT/measurements.json.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CTR_ROOT = Path(os.environ.get("VOICENAV_CTR_ROOT", "/var/tmp/voicenav-ctr"))
TOOLS = ("buildah", "podman", "skopeo")
# Building both images from scratch takes several minutes here; a cached rebuild takes seconds.
BUILD_TIMEOUT_S = 1800


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: builds and runs the container images (buildah, podman)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    for item in items:
        if "tests/images/" in str(item.fspath):
            item.add_marker(pytest.mark.images)
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"not installed: {', '.join(missing)} (scripts/setup.sh)"))


@functools.cache
def ctr_env() -> dict[str, str]:
    """podman/buildah settings of scripts/image.sh: its own storage under CTR_ROOT, runc, chroot isolation."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image.sh"), "env"],
        env={**os.environ, "VOICENAV_CTR_ROOT": str(CTR_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    return {**os.environ, **exports}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=ctr_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def _image(step: str, tag: str, override: str) -> str:
    if os.environ.get(override):
        return os.environ[override]
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image.sh"), "base", step],
        cwd=ROOT,
        env={**os.environ, "VOICENAV_CTR_ROOT": str(CTR_ROOT), "TAG": "test"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tag


@pytest.fixture(scope="session")
def cpu_image() -> str:
    return _image("cpu", "localhost/voicenav:test", "VOICENAV_IMAGE")


@pytest.fixture(scope="session")
def gpu_image() -> str:
    return _image("gpu", "localhost/voicenav:test-gpu", "VOICENAV_GPU_IMAGE")


@pytest.fixture(scope="session")
def measurements() -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    yield found
    if found:
        path = CTR_ROOT / "measurements.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **found}, indent=1))
