"""Audio front end: G.711, WAV parsing, resampling and log-mel, each against a reference."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from scipy.signal import butter, resample_poly, sosfilt

from asr_engine.audio import g711
from asr_engine.audio.mel import log_mel
from asr_engine.audio.resample import Resampler, resample
from asr_engine.audio.wav import AudioFormatError, parse_wav, wav_bytes

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")


def test_g711_bit_exact_with_reference_codec():
    x = np.arange(-32768, 32768, dtype=np.int16)
    every_byte = bytes(range(256))
    assert g711.ulaw_encode(x) == audioop.lin2ulaw(x.tobytes(), 2)
    assert g711.alaw_encode(x) == audioop.lin2alaw(x.tobytes(), 2)
    assert g711.ulaw_decode(every_byte).tobytes() == audioop.ulaw2lin(every_byte, 2)
    assert g711.alaw_decode(every_byte).tobytes() == audioop.alaw2lin(every_byte, 2)


def _tone_response(f: float, fs_in: int = 8000, fs_out: int = 16000) -> tuple[float, float]:
    """Gain (dB) at f and level of its image at fs_in - f relative to it (dB)."""
    t = np.arange(fs_in) / fs_in
    y = resample(np.sin(2 * np.pi * f * t).astype(np.float32), fs_in, fs_out)[2000:-2000]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / fs_out)
    sig = spec[np.argmin(abs(freqs - f))]
    image = spec[np.argmin(abs(freqs - (fs_in - f)))]
    return 20 * np.log10(np.sqrt(2) * np.std(y)), 20 * np.log10(image / sig)


@pytest.mark.parametrize("f", [300, 1000, 2000, 3400])
def test_resampler_passband_flat_and_images_rejected(f):
    gain, image = _tone_response(f)
    assert abs(gain) < 0.05, f"{f} Hz: passband gain {gain:.3f} dB"
    assert image < -80, f"{f} Hz: image only {image:.1f} dB down"


def test_resampler_matches_polyphase_reference_and_streams_exactly():
    rng = np.random.default_rng(0)
    x = sosfilt(butter(8, 3400, fs=8000, output="sos"), rng.standard_normal(16000)).astype(np.float32)
    ours, ref = resample(x, 8000, 16000), resample_poly(x, 2, 1)
    assert len(ours) == len(ref) == 32000
    assert np.corrcoef(ours[400:-400], ref[400:-400])[0, 1] > 0.9999
    whole = Resampler(8000, 16000).process(x)
    r = Resampler(8000, 16000)
    chunked = np.concatenate([r.process(c) for c in np.array_split(x, 97)])  # uneven 20 ms-ish pieces
    np.testing.assert_array_equal(chunked, whole)
    down = resample(rng.standard_normal(48000).astype(np.float32), 48000, 16000)
    assert len(down) == 16000


def test_log_mel_identical_to_faster_whisper(shared):
    fe_mod = pytest.importorskip("faster_whisper.feature_extractor")
    audio = parse_wav((shared / "data/callers_dev/dev001.wav").read_bytes())
    x = resample(audio.samples, audio.sample_rate, 16000)
    mel, pad = log_mel(x)
    ref = fe_mod.FeatureExtractor(feature_size=80)(np.pad(x, (0, 16000 * 30 - len(x))))
    n = mel.shape[1]
    np.testing.assert_allclose(mel, ref[:, :n], atol=1e-5)
    np.testing.assert_allclose(ref[:, n + 2 : 3000], pad, atol=1e-6)  # what a 30 s window pads with


def _wav(fmt_tag: int, channels: int, rate: int, bits: int, payload: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_formats_decode():
    pcm = (np.sin(np.arange(800) / 5) * 10000).astype(np.int16)
    a = parse_wav(wav_bytes(pcm, 8000))
    assert a.sample_rate == 8000 and len(a.samples) == 800
    mu = parse_wav(_wav(7, 1, 8000, 8, g711.ulaw_encode(pcm)))
    assert np.corrcoef(mu.samples, a.samples)[0, 1] > 0.999
    stereo = parse_wav(_wav(1, 2, 16000, 16, np.repeat(pcm, 2).tobytes()))
    np.testing.assert_allclose(stereo.samples, a.samples, atol=1e-6)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "no fmt chunk"),
        (_wav(1, 1, 8000, 16, b"")[:36] + b"data\x00\x00\x00\x00", "no audio samples"),
        (_wav(2, 1, 8000, 4, b"\x00" * 100), "unsupported WAV encoding"),
        (_wav(1, 0, 8000, 16, b"\x00" * 100), "channel count"),
        (_wav(1, 1, 100, 16, b"\x00" * 100), "sample rate"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \x02\x00\x00\x00ab", "fmt chunk too short"),
    ],
)
def test_broken_wavs_get_clear_errors(data, reason):
    with pytest.raises(AudioFormatError, match=reason):
        parse_wav(data)


def test_oversized_wav_refused():
    with pytest.raises(AudioFormatError, match="longer than"):
        parse_wav(wav_bytes(np.zeros(8000 * 11, dtype=np.int16), 8000), max_seconds=10)
