"""Service configuration: defaults, overridden by VOICENAV_* environment variables, then by flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from asr_engine.config import DecodeConfig, EngineConfig, RecognizerConfig


class ServiceConfig(BaseModel):
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=0, le=65535)  # 0: any free port
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    public_ip: str | None = Field(None, description="address advertised in SDP and Contact; default sip_host")
    # RTP ports per call; both None: any free port (tests, single-host setups without a firewall)
    rtp_port_min: int | None = Field(20000, ge=1024, le=65535)
    rtp_port_max: int | None = Field(20999, ge=1024, le=65535)
    redis_url: str | None = None
    model: str = "tiny.en"
    engine: Literal["onnx", "torchscript"] = "onnx"
    device: Literal["cpu", "cuda"] = "cpu"
    cuda_device_id: int = Field(0, ge=0)
    gpu_mem_limit_mb: int | None = Field(None, gt=0)
    allow_cpu_fallback: bool = Field(False, description="device=cuda without CUDA: serve from the CPU, not fail")
    intra_op_threads: int | None = Field(None, ge=1)
    max_calls: int = Field(32, ge=1)
    max_batch: int = Field(8, ge=1, le=64)
    beam_size: int = Field(1, ge=1, le=16)
    admin_token: str | None = Field(None, repr=False)
    admin_token_file: Path | None = None
    cache_dir: Path = Path.home() / ".cache" / "voicenav"
    drain_timeout_s: float = Field(300.0, ge=0)
    flow: Path | None = None
    max_body_mb: float = Field(16.0, gt=0)
    redis_prefix: str = Field("voicenav:", min_length=1, description="dialog keys go under <prefix>dialog:")
    hotwords_prefix: str = Field("voicenav:hotwords", min_length=1, description="the hot-word admin API's prefix")
    sip_transports: tuple[Literal["udp", "tcp"], ...] = ("udp", "tcp")
    retry_after_s: int = Field(30, ge=0, description="Retry-After of a 503 while draining or full")
    queue_uris: dict[str, str] = Field(
        default_factory=dict, description="queue -> SIP URI a routed SIP call is transferred to (REFER)"
    )
    apology_transfer_uri: str | None = Field(None, description="where a call goes when the service fails it")
    webrtc_host_addresses: list[str] | None = Field(None, description="ICE host candidates; None: all")
    prompt_cache_dir: Path | None = Field(None, description="rendered prompts; default <cache_dir>/prompts")
    prompt_voice: str | None = None
    end_of_speech_ms: int = Field(600, ge=64, le=5000, description="silence that ends a caller's turn")

    def recognizer(self) -> RecognizerConfig:
        return RecognizerConfig(
            model=self.model,
            engine=EngineConfig(
                kind=self.engine,
                device=self.device,
                device_id=self.cuda_device_id,
                gpu_mem_limit_mb=self.gpu_mem_limit_mb,
                allow_cpu_fallback=self.allow_cpu_fallback,
                intra_op_threads=self.intra_op_threads,
                cache_dir=self.cache_dir,
            ),
            decode=DecodeConfig(beam_size=self.beam_size),
            max_batch=self.max_batch,
        )


def from_env(overrides: dict | None = None, environ: dict[str, str] | None = None) -> ServiceConfig:
    """Build the config from VOICENAV_<FIELD> variables and explicit overrides (flags)."""
    env = os.environ if environ is None else environ
    values: dict = {}
    for name in ServiceConfig.model_fields:
        raw = env.get(f"VOICENAV_{name.upper()}")
        if raw is not None and raw != "":
            # Structured fields (queue_uris, lists) come as JSON in the environment.
            values[name] = json.loads(raw) if raw[:1] in "[{" else raw
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ServiceConfig.model_validate(values)


__all__ = ["ServiceConfig", "ValidationError", "from_env"]
