"""Recognizer configuration (pydantic), shared by the CLI, the HTTP service and the benchmarks."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


def cpu_quota() -> int:
    """CPUs this process may use: the cgroup quota (containers), else the affinity mask."""
    for path, parse in (
        ("/sys/fs/cgroup/cpu.max", lambda s: s.split()),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", None),
    ):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if parse:
            quota, period = parse(text)
        else:
            quota = text
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        if quota not in ("max", "-1"):
            return max(1, math.ceil(int(quota) / int(period)))
        break
    return len(os.sched_getaffinity(0))


class EngineConfig(BaseModel):
    """How the model runs: runtime, device and resource limits."""

    kind: Literal["onnx", "torchscript"] = "onnx"
    device: Literal["cpu", "cuda"] = "cpu"
    device_id: int = Field(0, ge=0)
    gpu_mem_limit_mb: int | None = Field(None, gt=0, description="per-instance GPU memory cap")
    intra_op_threads: int | None = Field(None, ge=1, description="default: the container's CPU quota")
    int8: bool = Field(True, description="dynamic int8 weights on CPU (onnx)")
    allow_cpu_fallback: bool = Field(
        False,
        description="device=cuda without a usable CUDA runtime: run on the CPU with a warning instead of "
        "failing to load (a GPU node with a broken driver would otherwise serve, slowly)",
    )
    cache_dir: Path = Path(os.environ.get("VOICENAV_CACHE_DIR", Path.home() / ".cache" / "voicenav"))

    def threads(self) -> int:
        return self.intra_op_threads or cpu_quota()


class DecodeConfig(BaseModel):
    beam_size: int = Field(1, ge=1, le=16)
    max_tokens_per_second: float = Field(8.0, gt=0, description="guard against runaway output")
    min_tokens: int = Field(10, ge=1)
    no_speech_threshold: float = Field(0.6, ge=0, le=1)
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    max_repeats: int = Field(2, ge=1, description="an n-gram repeated more often than this is cut")
    length_penalty: float | None = None
    language: str = "en"


class RecognizerConfig(BaseModel):
    model: str = Field("tiny.en", description="packaged model name, or a model directory / .pt file")
    engine: EngineConfig = EngineConfig()
    decode: DecodeConfig = DecodeConfig()
    encoder_window: Literal["spliced", "full", "utterance"] = Field(
        "spliced",
        description="spliced: encode the utterance, reuse a cached encoding of the silence after it; "
        "full: Whisper's 30 s window; utterance: the utterance alone (fastest, loops more)",
    )
    max_batch: int = Field(8, ge=1, le=64)
    max_wait_ms: float = Field(10.0, ge=0, le=1000)
    queue_size: int = Field(64, ge=1)

    @field_validator("model")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v
