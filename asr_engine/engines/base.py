"""What a Whisper runtime provides to the decoder: the encoder and one decoder step, on numpy arrays."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class DeviceUnavailableError(RuntimeError):
    """device=cuda was asked for and the runtime cannot run there (see `EngineConfig.allow_cpu_fallback`)."""


class Engine(Protocol):
    name: str

    def encode(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mel [B, n_mels, T] float32 -> cross-attention (keys, values), each [L, B, T/2, d]."""
        ...

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        self_bias: np.ndarray,
        self_k: np.ndarray,
        self_v: np.ndarray,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
        cross_bias: np.ndarray,
        tail_kt: np.ndarray,
        tail_v: np.ndarray,
        tail_bias: np.ndarray,
        logit_positions: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One step: (logits [B, m, V] at logit_positions, grown self_k, grown self_v).

        tail_kt [L, h, dh, T] and tail_v [L, h, T, dh]: the shared tail, split into heads (keys
        transposed), C-contiguous so that each layer's part is a view (see `SharedTail`)."""
        ...
