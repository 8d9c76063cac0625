"""WAV input with the checks a telephony service needs: PCM16, μ-law or A-law, mono or downmixed."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from .g711 import alaw_decode, ulaw_decode

_PCM, _FLOAT, _ALAW, _ULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
MAX_WAV_SECONDS = 600.0


class AudioFormatError(ValueError):
    """The bytes are not audio this service can take; the message says why."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def _chunks(data: bytes):
    pos = 12
    while pos + 8 <= len(data):
        cid, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        yield cid, body
        pos += 8 + size + (size & 1)


def parse_wav(data: bytes, max_seconds: float = MAX_WAV_SECONDS) -> Audio:
    """Decode a RIFF/WAVE file held in memory."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFormatError("not a RIFF/WAVE file")
    fmt = None
    for cid, body in _chunks(data):
        if cid == b"fmt ":
            if len(body) < 16:
                raise AudioFormatError("fmt chunk too short")
            fmt = struct.unpack_from("<HHIIHH", body)
            if fmt[0] == _EXTENSIBLE and len(body) >= 26:
                fmt = (struct.unpack_from("<H", body, 24)[0], *fmt[1:])
        elif cid == b"data":
            if fmt is None:
                raise AudioFormatError("data chunk before fmt chunk")
            # A truncated final chunk (a recording cut short) still carries usable audio.
            return _decode(body, fmt, max_seconds)
    raise AudioFormatError("no data chunk" if fmt else "no fmt chunk")


def _decode(body: bytes, fmt: tuple, max_seconds: float) -> Audio:
    tag, channels, rate, _, _block_align, bits = fmt
    if channels < 1 or channels > 8:
        raise AudioFormatError(f"unsupported channel count {channels}")
    if rate < 4000 or rate > 192000:
        raise AudioFormatError(f"unsupported sample rate {rate}")
    if tag == _PCM and bits == 16:
        x = np.frombuffer(body[: len(body) - len(body) % (2 * channels)], dtype="<i2").astype(np.float32) / 32768
    elif tag == _PCM and bits == 8:
        x = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128) / 128
    elif tag == _FLOAT and bits == 32:
        x = np.frombuffer(body[: len(body) - len(body) % (4 * channels)], dtype="<f4").astype(np.float32)
        x = np.nan_to_num(np.clip(x, -1, 1))
    elif tag == _ULAW and bits == 8:
        x = ulaw_decode(body).astype(np.float32) / 32768
    elif tag == _ALAW and bits == 8:
        x = alaw_decode(body).astype(np.float32) / 32768
    else:
        raise AudioFormatError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    if len(x) == 0:
        raise AudioFormatError("no audio samples")
    if len(x) / rate > max_seconds:
        raise AudioFormatError(f"audio longer than {max_seconds:.0f} s")
    return Audio(np.ascontiguousarray(x, dtype=np.float32), rate)


def read_wav(path: str) -> Audio:
    with open(path, "rb") as f:
        return parse_wav(f.read())


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A PCM16 mono WAV of int16 (or float in [-1, 1]) samples."""
    x = np.asarray(pcm)
    if x.dtype != np.int16:
        x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()
