"""The GPU image without a GPU: its onnxruntime has the CUDA provider (with NVIDIA's wheels on the
library path), has no PyTorch, and refuses to serve from the CPU when CUDA cannot start."""

from __future__ import annotations

import pytest

from tests.images.conftest import podman

pytestmark = pytest.mark.timeout(2400)

_CHECK = """
import importlib.util, onnxruntime
print(",".join(onnxruntime.get_available_providers()))
print(importlib.util.find_spec("torch") is None)
"""

# Loading the served model for CUDA on a machine without a GPU must fail at load, naming the reason.
_LOAD = """
from asr_engine.config import RecognizerConfig, EngineConfig
from asr_engine.engines.base import DeviceUnavailableError
from asr_engine.recognizer import engine_for
try:
    engine_for(RecognizerConfig(model="tiny.en", engine=EngineConfig(device="cuda")))
except DeviceUnavailableError as e:
    print("refused:", e)
engine, *_ = engine_for(RecognizerConfig(model="tiny.en", engine=EngineConfig(device="cuda", allow_cpu_fallback=True)))
print("fallback:", ",".join(engine.providers))
"""


def _python(image: str, code: str) -> str:
    """Run `code` in the image as the pod's user, without network (no GPU attached)."""
    return podman(
        "run", "--rm", "--network", "none", "--user", "10001", "--entrypoint", "python", image, "-c", code
    ).stdout


def test_gpu_image_has_the_cuda_provider_and_no_torch(gpu_image: str) -> None:
    out = podman(
        "run", "--rm", "--network", "none", "--user", "10001", "--entrypoint", "python", gpu_image, "-c", _CHECK
    )
    providers, no_torch = out.stdout.split()
    assert "CUDAExecutionProvider" in providers.split(","), providers
    assert no_torch == "True"


def test_gpu_image_fails_to_load_for_cuda_without_a_gpu(gpu_image: str) -> None:
    out = _python(gpu_image, _LOAD)
    # onnxruntime prints its own fallback banner on stdout too: look for this script's lines.
    ours = [line for line in out.splitlines() if line.startswith(("refused:", "fallback:"))]
    assert len(ours) == 2 and ours[0].startswith("refused: device=cuda but the CUDA provider did not start"), out
    assert ours[1] == "fallback: CPUExecutionProvider", out
