"""Caller audio for the turn-taking benchmarks and tests: synthetic voices and Allison's recordings as
a telephone line carries them (8 kHz int16), pauses, and the non-speech a line hears (coughs,
clicks, noise bursts).

The channel follows `shared/data/make_callers.py`: a 300-3400 Hz band, light line noise, a G.711
μ-law round trip. Voices: flite and espeak-ng, which `scripts/setup.sh` installs.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import scipy.signal as signal

from asr_engine.audio.g711 import ulaw_decode, ulaw_encode
from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav

from .common import ASTERISK

RATE = 8000
VOICES = ("flite:slt", "flite:rms", "flite:awb", "flite:kal16", "espeak:en-us+f3", "espeak:en-gb+m3")
ALLISON_DIGITS = ASTERISK / "digits"


def _pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(samples, dtype=np.float32) * 32768, -32768, 32767).astype(np.int16)


def trimmed(pcm: np.ndarray, floor: int = 200) -> np.ndarray:
    """Without the recording's own leading and trailing silence."""
    loud = np.flatnonzero(np.abs(pcm) > floor)
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm[:0]


def synthesize(text: str, voice: str) -> np.ndarray:
    """`text` in a synthetic voice ("flite:slt", "espeak:en-us+f3"), 8 kHz int16, trimmed."""
    engine, name = voice.split(":", 1)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if engine == "flite":
            cmd = ["flite", "-voice", name, "-t", text, "-o", str(wav)]
        elif engine == "espeak":
            cmd = ["espeak-ng", "-v", name, "-s", "155", "-w", str(wav), text]
        else:
            raise ValueError(f"unknown voice {voice!r}")
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio = read_wav(str(wav))
    pcm = _pcm16(audio.samples)
    if audio.sample_rate != RATE:
        pcm = resample_int16(pcm, audio.sample_rate, RATE)
    return trimmed(pcm)


def allison(key: str) -> np.ndarray:
    """One of Allison's recordings (`digits/5`, `vm-and`), 8 kHz int16, trimmed."""
    return trimmed(_pcm16(read_wav(str(ASTERISK / f"{key}.wav")).samples))


def allison_number(group: str) -> np.ndarray:
    """A digit group in Allison's voice, said in one go."""
    return np.concatenate([allison(f"digits/{d}") for d in group])


def joined(parts: list[np.ndarray], pauses_s: list[float]) -> np.ndarray:
    """Parts with these pauses (silence) between them."""
    assert len(pauses_s) == len(parts) - 1
    out = [parts[0]]
    for pause, part in zip(pauses_s, parts[1:], strict=True):
        out += [np.zeros(int(pause * RATE), np.int16), part]
    return np.concatenate(out)


def telephone(pcm: np.ndarray, rng: np.random.Generator, level: float = 0.5) -> np.ndarray:
    """Through the phone line: band-limited, scaled to `level` of full scale at its peak, line noise at
    18-30 dB SNR, G.711 μ-law. Silence stays (nearly) silent: the noise follows the speech level."""
    x = pcm.astype(np.float64) / 32768
    b, a = signal.butter(4, [300, 3400], btype="band", fs=RATE)
    y = signal.lfilter(b, a, x)
    y = y / (np.max(np.abs(y)) + 1e-9) * level
    voiced = np.abs(y) > 0.01
    power = np.mean(y[voiced] ** 2) if voiced.any() else 1e-6
    snr_db = rng.uniform(18, 30)
    y = y + rng.standard_normal(len(y)) * np.sqrt(power / 10 ** (snr_db / 10))
    return ulaw_decode(ulaw_encode(_pcm16(np.clip(y, -1, 1))))


def cough(rng: np.random.Generator, seconds: float = 0.25) -> np.ndarray:
    """A cough-like burst: broadband noise with a sharp attack and a fast decay, shaped by a low
    resonance (a chest, not a voice: no pitch)."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    envelope = (1 - np.exp(-t / 0.005)) * np.exp(-t / (seconds / 4))
    noise = signal.lfilter(*signal.butter(2, [200, 1800], btype="band", fs=RATE), rng.standard_normal(n))
    y = noise * envelope
    return _pcm16(y / (np.max(np.abs(y)) + 1e-9) * 0.6)


def clicks(rng: np.random.Generator, count: int = 3, seconds: float = 0.4) -> np.ndarray:
    """Line clicks: single-sample spikes, ringing briefly, at random times."""
    y = np.zeros(int(seconds * RATE))
    for at in rng.integers(0, len(y) - 40, count):
        y[at : at + 40] += np.exp(-np.arange(40) / 6) * rng.choice([-1, 1]) * 0.8
    return _pcm16(np.clip(y, -1, 1))


def noise_burst(rng: np.random.Generator, seconds: float = 0.3) -> np.ndarray:
    """A burst of line hiss (a bad connection, a rustle)."""
    n = int(seconds * RATE)
    window = np.hanning(n)
    return _pcm16(rng.standard_normal(n) * window * 0.2)
