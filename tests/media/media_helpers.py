"""Test helpers: a minimal pcap reader, WAV reading, correlation and DTMF tone synthesis."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")


def pcap_udp_payloads(path: Path) -> list[tuple[float, bytes]]:
    """(capture time, UDP payload) of each IPv4/UDP packet of a classic little/big-endian pcap."""
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    link_len = {1: 14, 113: 16, 101: 0}[linktype]
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        ip = frame[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        out.append((sec + frac / (1e9 if nano else 1e6), bytes(udp[8:])))
    return out


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16), w.getframerate()


def best_correlation(ref: np.ndarray, got: np.ndarray) -> tuple[float, int]:
    """Pearson correlation of `got` against `ref` at the best lag (got delayed by lag samples)."""
    a = ref.astype(np.float64) - ref.mean()
    b = got.astype(np.float64) - got.mean()
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lags = np.concatenate([np.arange(0, len(b)), np.arange(-(len(a) - 1), 0)])
    vals = np.concatenate([xc[: len(b)], xc[n - (len(a) - 1) :]])
    lag = int(lags[np.argmax(vals)])
    if lag >= 0:
        m = min(len(a), len(b) - lag)
        x, y = a[:m], b[lag : lag + m]
    else:
        m = min(len(a) + lag, len(b))
        x, y = a[-lag : -lag + m], b[:m]
    return float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())), lag


def dtmf_tone(
    digit: str, seconds: float, amplitude: float = 6000.0, deviation: float = 0.0, twist_db: float = 0.0
) -> np.ndarray:
    """Row + column tone; `deviation` shifts the row up and the column down; twist = column/row in dB."""
    r = next(i for i, row in enumerate(KEYPAD) if digit in row)
    f1, f2 = ROWS[r] * (1 + deviation), COLS[KEYPAD[r].index(digit)] * (1 - deviation)
    t = np.arange(int(seconds * 8000)) / 8000
    return amplitude * np.sin(2 * np.pi * f1 * t) + amplitude * 10 ** (twist_db / 20) * np.sin(2 * np.pi * f2 * t)
