"""Rational-ratio resampling with a linear-phase FIR, usable on a stream or on a whole signal.

Telephone audio (8 kHz) goes to 16 kHz for the recognizer and WebRTC audio (48 kHz) comes down to
it. The stream form keeps the filter state between chunks, so a call's audio resamples the same in
20 ms pieces as in one piece, and adds only the filter's group delay (about 2 ms at 16 kHz).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import firwin, lfilter, resample_poly

# Kaiser design: ~80 dB stopband with the transition band inside the 5% guard below Nyquist.
_ATTEN_DB = 80.0
_GUARD = 0.05


@lru_cache(maxsize=16)
def design(up: int, down: int) -> np.ndarray:
    """Anti-imaging/anti-aliasing lowpass at the up-sampled rate, gain `up`."""
    cutoff = 1.0 / max(up, down)  # of the up-sampled Nyquist
    width = cutoff * _GUARD * 2
    beta = 0.1102 * (_ATTEN_DB - 8.7)
    numtaps = int(np.ceil((_ATTEN_DB - 7.95) / (2.285 * np.pi * width))) | 1
    h = firwin(numtaps, cutoff * (1 - _GUARD), window=("kaiser", beta))
    return (h * up).astype(np.float64)


class Resampler:
    """Stateful resampler: feed chunks with `process`, each returning what is ready.

    It filters at the up-sampled rate, which suits the small ratios of live audio (8 kHz x 2,
    48 kHz / 3); whole signals at any ratio go through `resample`.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        g = gcd(from_rate, to_rate)
        self.up, self.down = to_rate // g, from_rate // g
        self.h = design(self.up, self.down) if (self.up, self.down) != (1, 1) else None
        self.zi = np.zeros(len(self.h) - 1) if self.h is not None else None
        self.phase = 0  # index, in up-sampled samples, of the next output sample within the next chunk

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.h is None:
            return x
        u = np.zeros(len(x) * self.up)
        u[:: self.up] = x
        y, self.zi = lfilter(self.h, 1.0, u, zi=self.zi)
        out = y[self.phase :: self.down]
        self.phase = (self.phase - len(u)) % self.down
        return out.astype(np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """A whole signal, delay-compensated, `len(x) * to_rate / from_rate` samples long.

    Same filter as `Resampler`, applied polyphase (only the output samples are computed), which
    keeps awkward ratios such as 22,050 -> 8,000 Hz (160/441) cheap.
    """
    x = np.asarray(x, dtype=np.float32)
    if from_rate == to_rate:
        return x
    g = gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    return resample_poly(x, up, down, window=design(up, down) / up).astype(np.float32)


def resample_int16(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """`resample` for mono int16 audio (prompts, RTP, WebRTC), rounded and clipped back to int16."""
    x = np.asarray(pcm, dtype=np.int16).reshape(-1)
    if from_rate == to_rate or x.size == 0:
        return x.copy()
    y = resample(x.astype(np.float32), from_rate, to_rate)
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)
