"""onnxruntime engine: on the CPU, or on CUDA when asked for (failing to load if CUDA is missing, unless
the config allows falling back to the CPU)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..config import EngineConfig
from ..models.artifacts import decoder_feed, run_files
from .base import DeviceUnavailableError

log = logging.getLogger(__name__)


def providers_for(config: EngineConfig, available: list[str] | None = None) -> list[Any]:
    """The provider list for InferenceSession; CUDA options carry the per-instance memory cap."""
    available = ort.get_available_providers() if available is None else available
    if config.device == "cuda":
        if "CUDAExecutionProvider" in available:
            return [("CUDAExecutionProvider", cuda_provider_options(config)), "CPUExecutionProvider"]
        reason = (
            f"device=cuda but onnxruntime has no CUDAExecutionProvider (available: {', '.join(available)}; "
            "install onnxruntime-gpu with CUDA 12 and cuDNN 9)"
        )
        if not config.allow_cpu_fallback:
            raise DeviceUnavailableError(f"{reason}; allow_cpu_fallback=True runs on the CPU instead")
        log.warning("%s: running on CPU (allow_cpu_fallback)", reason)
    return ["CPUExecutionProvider"]


def cuda_provider_options(config: EngineConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "device_id": config.device_id,
        # Grow the arena only by what is requested, so the cap below is what the instance uses.
        "arena_extend_strategy": "kSameAsRequested",
        "cudnn_conv_algo_search": "HEURISTIC",
    }
    if config.gpu_mem_limit_mb:
        opts["gpu_mem_limit"] = config.gpu_mem_limit_mb * 1024 * 1024
    return opts


def session_options(config: EngineConfig) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OnnxEngine:
    name = "onnx"

    def __init__(self, artifacts: Path, config: EngineConfig) -> None:
        names = run_files(config)
        so, providers = session_options(config), providers_for(config)

        def sessions(providers: list[Any]) -> list[ort.InferenceSession]:
            return [ort.InferenceSession(str(artifacts / n), so, providers=providers) for n in names]

        failure = None
        try:
            self.encoder, self.decoder = sessions(providers)
            if providers[0] != "CPUExecutionProvider" and "CUDAExecutionProvider" not in self.encoder.get_providers():
                # Built in but unable to start (no device, driver or CUDA libraries): onnxruntime then
                # runs on the CPU and only logs it.
                failure = f"the session runs on {', '.join(self.encoder.get_providers())}"
        except Exception as e:  # onnxruntime raises its own types; anything but a CUDA start is re-raised
            if providers[0] == "CPUExecutionProvider":
                raise
            failure = str(e).strip().splitlines()[0]
        if failure is not None:
            reason = f"device=cuda but the CUDA provider did not start: {failure}"
            if not config.allow_cpu_fallback:
                raise DeviceUnavailableError(f"{reason}; allow_cpu_fallback=True runs on the CPU instead")
            log.warning("%s: running on CPU (allow_cpu_fallback)", reason)
            self.encoder, self.decoder = sessions(["CPUExecutionProvider"])
        self.providers = self.encoder.get_providers()
        self.decoder_inputs = [i.name for i in self.decoder.get_inputs()]

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, v = self.encoder.run(None, {"mel": mel})
        return k, v

    def decode(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, k, v = self.decoder.run(None, dict(zip(self.decoder_inputs, decoder_feed(inputs), strict=True)))
        return logits, k, v
