"""TorchScript engine: the traced encoder and decoder step on CPU or a CUDA device."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import EngineConfig
from ..models.artifacts import decoder_feed
from .base import DeviceUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchPlacement:
    device: str
    memory_fraction: float | None
    threads: int


def placement_for(config: EngineConfig, cuda_available: bool, total_memory: int | None) -> TorchPlacement:
    """Where and with what limits the model runs; `total_memory` is the device's bytes."""
    if config.device == "cuda" and not cuda_available:
        reason = "device=cuda but torch sees no CUDA device"
        if not config.allow_cpu_fallback:
            raise DeviceUnavailableError(f"{reason}; allow_cpu_fallback=True runs on the CPU instead")
        log.warning("%s: running on CPU (allow_cpu_fallback)", reason)
    if config.device == "cuda" and cuda_available:
        fraction = None
        if config.gpu_mem_limit_mb and total_memory:
            fraction = min(1.0, config.gpu_mem_limit_mb * 1024 * 1024 / total_memory)
        return TorchPlacement(f"cuda:{config.device_id}", fraction, config.threads())
    return TorchPlacement("cpu", None, config.threads())


class TorchScriptEngine:
    name = "torchscript"

    def __init__(self, artifacts: Path, config: EngineConfig) -> None:
        cuda = torch.cuda.is_available()
        total = torch.cuda.get_device_properties(config.device_id).total_memory if cuda else None
        self.placement = placement_for(config, cuda, total)
        torch.set_num_threads(self.placement.threads)
        if self.placement.memory_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(self.placement.memory_fraction, config.device_id)
        dev = torch.device(self.placement.device)
        self.device = dev
        self.encoder = torch.jit.load(str(artifacts / "encoder.ts"), map_location=dev).eval()
        self.decoder = torch.jit.load(str(artifacts / "decoder.ts"), map_location=dev).eval()

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.device)

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            k, v = self.encoder(self._t(mel))
        return k.cpu().numpy(), v.cpu().numpy()

    def decode(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, k, v = self.decoder(*(self._t(x) for x in decoder_feed(inputs)))
        return logits.cpu().numpy(), k.cpu().numpy(), v.cpu().numpy()
