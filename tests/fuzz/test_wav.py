"""WAV: any bytes give Audio or AudioFormatError; what comes out is finite mono float32 in [-1, 1]."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from asr_engine.audio.wav import Audio, AudioFormatError, parse_wav


def _check(data: bytes) -> None:
    try:
        audio = parse_wav(data, max_seconds=30)
    except AudioFormatError:
        return
    assert isinstance(audio, Audio) and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert len(audio.samples) > 0 and np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() <= 1.0


@st.composite
def wav_like(draw: st.DrawFn) -> bytes:
    """RIFF/WAVE with a fmt chunk of drawn fields (often nonsense) and drawn chunk sizes."""
    tag = draw(st.sampled_from([1, 3, 6, 7, 0xFFFE, draw(st.integers(0, 2**16 - 1))]))
    channels = draw(st.integers(0, 10))
    rate = draw(st.sampled_from([0, 3999, 8000, 16000, 192001, draw(st.integers(0, 2**32 - 1))]))
    bits = draw(st.sampled_from([0, 8, 16, 24, 32, draw(st.integers(0, 2**16 - 1))]))
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels, channels * 2, bits)
    fmt += draw(st.binary(max_size=12))
    fmt_size = draw(st.sampled_from([len(fmt), 14, 2**32 - 1]))
    data = draw(st.binary(max_size=2048))
    data_size = draw(st.sampled_from([len(data), 0, 2**32 - 1, draw(st.integers(0, 4096))]))
    body = b"WAVE" + struct.pack("<4sI", b"fmt ", fmt_size) + fmt + struct.pack("<4sI", b"data", data_size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_audio_format_error(data: bytes) -> None:
    _check(data)


@given(wav_like())
@example(  # a NaN float sample
    b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00\x01\x00@\x1f\x00\x00\x00}\x00\x00\x04\x00 \x00"
    b"data\x04\x00\x00\x00\x00\x00\xc0\x7f"
)
def test_wav_shaped_bytes_decode_or_raise_audio_format_error(data: bytes) -> None:
    _check(data)
