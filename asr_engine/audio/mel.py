"""Whisper's log-mel spectrogram (25 ms Hann window, 10 ms hop, Slaney mel scale), in numpy.

Computed on the audio as it is: no padding to 30 s. `pad_frames` supplies what a 30 s window would
have held after the speech, so callers that need the full window can build it without the FFT work.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with htk=False, norm='slaney'."""
    fmax = sr / 2
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def log_mel(audio: np.ndarray, n_mels: int = 80, level: float | None = None) -> tuple[np.ndarray, float]:
    """16 kHz float samples -> (log-mel [n_mels, len // 160], padding value).

    The padding value is what Whisper's features hold where a 30 s window has only zeros: the
    floor of the dynamic range, max - 8, rescaled like the rest. With `level`, the spectrum is
    shifted so that its peak (log10 power) sits there, as a gain change of the audio would: the
    padding value is then the same for every input.
    """
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < N_FFT:
        x = np.pad(x, (0, N_FFT - len(x)))
    # Reflect at the start as Whisper does; zeros at the end, because in Whisper's 30 s window the
    # speech is followed by zero padding, not by its own mirror image.
    padded = np.concatenate([x[1 : N_FFT // 2 + 1][::-1], x, np.zeros(N_FFT // 2, dtype=np.float32)])
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    spec = np.fft.rfft(frames * _window(), axis=1)
    power = (spec.real**2 + spec.imag**2)[:-1].T  # Whisper drops the last frame
    mel = mel_filters(n_mels) @ power
    log_spec = np.log10(np.maximum(mel, 1e-10))
    if level is not None:
        log_spec += level - float(log_spec.max())
    # A 30 s window's zero padding reaches log10(1e-10) = -10, so the floor is max - 8 unless the
    # audio is nearly silent, where -10 wins: either way the padding value is the same as Whisper's.
    floor = max(float(log_spec.max()), -10.0 + 8.0) - 8.0
    log_spec = np.maximum(log_spec, floor)
    return ((log_spec + 4.0) / 4.0).astype(np.float32), (floor + 4.0) / 4.0
