"""Recognizer configuration (pydantic), shared by the CLI, the HTTP service and the benchmarks.

Nothing here reads the environment: the app's settings (`ivr.app.config`) fill these models."""

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


def default_cache_dir() -> Path:
    """Where converted models (and the app's rendered prompts) go unless configured otherwise."""
    return Path.home() / ".cache" / "voicenav"


class EngineConfig(BaseModel):
    """How the model runs: runtime, device and resource limits."""

    kind: Literal["onnx", "torchscript"] = Field("onnx", description="inference runtime")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the model runs")
    device_id: int = Field(0, ge=0, description="CUDA device index")
    gpu_mem_limit_mb: int | None = Field(None, gt=0, description="per-instance GPU memory cap")
    intra_op_threads: int | None = Field(None, ge=1, description="default: the container's CPU quota")
    int8: Literal["both", "encoder", "decoder", "none"] = Field(
        "both", description="which parts run with dynamic int8 weights on CPU (onnx); fp32 for the others"
    )
    allow_cpu_fallback: bool = Field(
        False,
        description="device=cuda without a usable CUDA runtime: run on the CPU with a warning instead of "
        "failing to load (a GPU node with a broken driver would otherwise serve, slowly)",
    )
    cache_dir: Path = Field(default_factory=default_cache_dir, description="where converted models are kept")

    def threads(self) -> int:
        return self.intra_op_threads or cpu_quota()

    def int8_parts(self) -> frozenset[str]:
        """The model parts run with int8 weights (only the CPU kernels gain from them)."""
        if self.kind != "onnx" or self.device != "cpu" or self.int8 == "none":
            return frozenset()
        return frozenset(("encoder", "decoder")) if self.int8 == "both" else frozenset((self.int8,))


class DecodeConfig(BaseModel):
    beam_size: int = Field(1, ge=1, le=16, description="beam search width; 1: greedy")
    max_tokens_per_second: float = Field(8.0, gt=0, description="guard against runaway output")
    min_tokens: int = Field(10, ge=1, description="token budget of even the shortest utterance")
    no_speech_threshold: float = Field(
        0.6, ge=0, le=1, description="no-speech probability above which a low-confidence result counts as silence"
    )
    logprob_threshold: float = Field(-1.0, description="average log-probability below which a result is low-confidence")
    compression_ratio_threshold: float = Field(
        2.4, description="gzip ratio above which a low-confidence transcript counts as a loop"
    )
    max_repeats: int = Field(2, ge=1, description="an n-gram repeated more often than this is cut")
    length_penalty: float | None = Field(
        None, description="beam ranking length penalty exponent; None: divide by length"
    )
    language: str = Field("en", description="language token of the decode")
    # Chosen on the tuning half of bench/digits.py (1-8 all beat none on the synthetic voices) and on
    # the callers_dev commands said at a digits node: from 2 on, "can you say that again" is lost.
    grammar_boost: float = Field(
        1.5,
        ge=0,
        le=30,
        description="calls: logit boost of the tokens of a closed grammar (digits, yes/no) while the dialog "
        "expects one; 0: the grammar only reads the transcript",
    )


# The default model per device: the most accurate one whose turn latency with 20 callers stays in
# budget there (README, "Choosing the model"). base's extra encoder and decoder layers cost 1.5-4x
# tiny.en's time, which a GPU absorbs and a few CPU cores do not.
DEFAULT_MODEL: dict[str, str] = {"cpu": "tiny.en", "cuda": "base"}


class RecognizerConfig(BaseModel):
    model: str = Field(
        "auto",
        description="packaged model name, or a model directory / .pt file; auto: base on cuda, tiny.en on cpu",
    )
    engine: EngineConfig = EngineConfig()
    decode: DecodeConfig = DecodeConfig()
    encoder_window: Literal["spliced", "full", "utterance"] = Field(
        "spliced",
        description="spliced: encode the utterance, reuse a cached encoding of the silence after it; "
        "full: Whisper's 30 s window; utterance: the utterance alone (fastest, loops more)",
    )
    max_batch: int = Field(8, ge=1, le=64, description="utterances decoded together")
    max_wait_ms: float = Field(10.0, ge=0, le=1000, description="how long a batch waits to fill")
    queue_size: int = Field(64, ge=1, description="utterances in flight; more wait, then are refused as overloaded")
    upload_queue_size: int = Field(
        32,
        ge=1,
        description="uploaded speech chunks (/v1/recognize) in flight; a recording that does not fit gets 503",
    )
    worker_timeout_s: float = Field(
        30.0, gt=0, description="a batch decoding longer than this counts as hung: its worker is replaced"
    )

    @field_validator("model")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v

    def model_name(self) -> str:
        """The model to load: `model`, with auto resolved for the configured device. Resolved here, not
        when validating, so that a device set after the defaults (one flag) still picks its model."""
        return DEFAULT_MODEL[self.engine.device] if self.model == "auto" else self.model
