"""Spoken account numbers with known digits: Allison's recorded digits strung together (real speech)
and TTS voices through a telephone channel (synthetic), both at 8 kHz, generated from a fixed seed."""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav

from .common import ASTERISK

RATE = 8000
ALLISON_DIGITS = ASTERISK / "digits"
GROUP_PAUSE_S = 0.7  # a breath between digit groups
# flite and espeak-ng voices; festival is not installed on every machine.
VOICES = (("flite", "slt"), ("flite", "rms"), ("flite", "awb"), ("espeak", "en-us+f3"), ("espeak", "en-gb+m3"))
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Number:
    key: str  # the number's, shared by its two readings: the split into halves hashes it
    digits: str
    groups: tuple[str, ...]  # one group: said without a pause
    pcm: np.ndarray  # 8 kHz int16


def account_numbers(count: int, seed: int) -> list[tuple[str, tuple[str, ...]]]:
    """`count` numbers of 6-10 digits, each once in groups (3 or 4, then the rest) and once whole."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 10)))
        cut = rng.choice((3, 4))
        out.append((digits, (digits[:cut], digits[cut:])))
        out.append((digits, (digits,)))
    return out


def _trimmed(pcm: np.ndarray, floor: int = 200) -> np.ndarray:
    loud = np.flatnonzero(np.abs(pcm) > floor)
    return pcm[loud[0] : loud[-1] + 1] if len(loud) else pcm


def allison(groups: tuple[str, ...], pause_s: float = GROUP_PAUSE_S) -> np.ndarray:
    """Allison's recorded digits, each group said in one go, `pause_s` of silence between groups."""
    said = []
    for group in groups:
        clips = [read_wav(str(ALLISON_DIGITS / f"{d}.wav")) for d in group]
        pcm = np.concatenate([(np.asarray(c.samples) * 32767).astype(np.int16) for c in clips])
        said.append(_trimmed(pcm))
    pause = np.zeros(int(pause_s * RATE), np.int16)
    return np.concatenate([part for g in said for part in (g, pause)][:-1])


def asterisk_numbers(count: int, seed: int = 11) -> list[Number]:
    return [
        Number(f"a{i // 2:03d}", digits, groups, allison(groups))
        for i, (digits, groups) in enumerate(account_numbers(count, seed))
    ]


def tts_available() -> bool:
    return all(shutil.which(tool) for tool in ("flite", "espeak-ng"))


def _synth(engine: str, voice: str, text: str, path: Path) -> None:
    if engine == "flite":
        argv = ["flite", "-voice", voice, "-t", text, "-o", str(path)]
    else:
        argv = ["espeak-ng", "-v", voice, "-s", "155", "-w", str(path), text]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _spoken(engine: str, voice: str, group: str, tmp: Path) -> np.ndarray:
    path = tmp / "said.wav"
    _synth(engine, voice, ", ".join(WORDS[int(d)] for d in group), path)
    audio = read_wav(str(path))
    pcm = (np.asarray(audio.samples) * 32767).astype(np.int16)
    return _trimmed(resample_int16(pcm, audio.sample_rate, RATE) if audio.sample_rate != RATE else pcm)


def telephone(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone line: 300-3400 Hz band, line noise at 18-30 dB SNR, a G.711 μ-law round trip (as the
    callers_dev set was made)."""
    b, a = signal.butter(4, [300, 3400], btype="band", fs=RATE)
    y = signal.lfilter(b, a, pcm.astype(np.float64) / 32768)
    y = y / (np.max(np.abs(y)) + 1e-9) * 0.5
    snr_db = rng.uniform(18, 30)
    y = np.clip(y + rng.standard_normal(len(y)) * np.sqrt(np.mean(y**2) / 10 ** (snr_db / 10)), -1, 1)
    mu = 255.0
    q = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    q = np.round((q + 1) / 2 * 255) / 255 * 2 - 1  # 8-bit companded
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu * 32767).astype(np.int16)


def tts_numbers(count: int, seed: int = 13) -> list[Number]:
    """Numbers spoken by flite and espeak-ng voices in turn, through `telephone`."""
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (digits, groups) in enumerate(account_numbers(count, seed)):
            engine, voice = VOICES[(i // 2) % len(VOICES)]
            pause = np.zeros(int(GROUP_PAUSE_S * RATE), np.int16)
            parts = [_spoken(engine, voice, g, Path(tmp)) for g in groups]
            lead = np.zeros(int(rng.uniform(0.3, 0.8) * RATE), np.int16)
            said = [p for part in parts for p in (part, pause)][:-1]
            pcm = np.concatenate([lead, *said, np.zeros(RATE // 2, np.int16)])
            out.append(Number(f"t{i // 2:03d}", digits, groups, telephone(pcm, rng)))
    return out
