"""Encoder output for "silence after the speech", computed once and reused.

Whisper is trained on 30 s windows: after the speech, the decoder expects to see the encoding of the
padding, and without it (an encoder run on the utterance alone) it keeps talking, repeating itself.
Encoding the full window costs ~10x more than the utterance. Splicing the utterance's encoding with
the encoding of an all-padding window at the positions after the speech gives the decoder what it
expects for the cost of the short encoder run. The padding value depends on the utterance's
loudness (Whisper's floor is max - 8 in log10 units), so tails are cached per quantized value.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .engines.base import Engine

QUANTUM = 0.1  # log-mel units; coarser steps measurably hurt WER, finer ones only cost memory


class SilenceTail:
    def __init__(self, engine: Engine, n_mels: int, frames: int, max_entries: int = 12) -> None:
        self.engine = engine
        self.n_mels = n_mels
        self.frames = frames
        self.max_entries = max_entries
        self._cache: OrderedDict[float, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
        """Cross-attention (keys, values) [L, S_full, d] of a window holding only padding."""
        key = round(round(pad_value / QUANTUM) * QUANTUM, 4)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        mel = np.full((1, self.n_mels, self.frames), key, dtype=np.float32)
        k, v = self.engine.encode(mel)
        entry = (k[:, 0], v[:, 0])
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return entry

    def splice(self, k: np.ndarray, v: np.ndarray, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
        """Extend an utterance's cross K/V [L, S, d] to the full window with the silence tail."""
        tk, tv = self.get(pad_value)
        s = k.shape[1]
        return np.concatenate([k, tk[:, s:]], axis=1), np.concatenate([v, tv[:, s:]], axis=1)
