"""DTMF: RFC 4733 telephone-event receiver and sender, and an in-band (Goertzel) tone detector."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import numpy as np

from ivr.media.rtp import RtpPacket, ts_delta

DIGITS = "0123456789*#ABCD"
ROW_FREQS = (697.0, 770.0, 852.0, 941.0)
COL_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")


class DtmfPayloadError(ValueError):
    """A telephone-event payload that is too short to hold an event."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 §2.3 event block."""

    event: int
    end: bool
    volume: int  # 0-63, the power level in -dBm0
    duration: int  # in timestamp units

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise DtmfPayloadError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def encode(self) -> bytes:
        flags = (0x80 if self.end else 0) | (self.volume & 0x3F)
        return struct.pack("!BBH", self.event, flags, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """A digit as the RFC 4733 receiver reports it, once per event."""

    digit: str
    volume: int
    duration: int  # timestamp units seen so far (grows until the end packets)
    timestamp: int
    ssrc: int


@dataclass(slots=True)
class _EventState:
    timestamp: int
    event: int
    duration: int
    ended: bool


class Rfc4733Receiver:
    """Turns telephone-event packets into exactly one `DtmfEvent` per event.

    All packets of an event share its RTP timestamp (the start packet, the updates and the three
    redundant end packets), so the digit is reported on the first packet seen with a new
    timestamp; that also reports it when the start packet was lost. State is per SSRC: some
    senders (sipp's play_dtmf) use an SSRC of their own for events.
    """

    MAX_SSRCS = 8  # a flood of made-up SSRCs must not grow the state without bound
    REORDER_WINDOW = 16000  # timestamp units (2 s at 8 kHz) within which an older event is a straggler

    def __init__(self) -> None:
        self._state: dict[int, _EventState] = {}
        self._seen: dict[int, deque[int]] = {}

    def feed(self, packet: RtpPacket) -> DtmfEvent | None:
        ev = TelephoneEvent.parse(packet.payload)
        if packet.ssrc not in self._seen and len(self._seen) >= self.MAX_SSRCS:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._state.pop(oldest, None)
        seen = self._seen.setdefault(packet.ssrc, deque(maxlen=16))
        state = self._state.get(packet.ssrc)
        if state is not None and packet.timestamp == state.timestamp:
            state.duration = max(state.duration, ev.duration)
            state.ended |= ev.end
            return None
        if packet.timestamp in seen:
            return None  # a straggler of an event already reported
        if state is not None and -self.REORDER_WINDOW < ts_delta(packet.timestamp, state.timestamp) < 0:
            return None  # a little older than the current event: reordered, already past
        # (much older: the sender restarted its timestamps, and this is a new key press)
        # RFC 4733 §2.5.1.3: an event longer than the 16-bit duration continues in a new segment
        # whose timestamp follows the previous one; it is the same key press.
        continued = (
            state is not None
            and not state.ended
            and state.event == ev.event
            and packet.timestamp == (state.timestamp + state.duration) & 0xFFFFFFFF
        )
        seen.append(packet.timestamp)
        self._state[packet.ssrc] = _EventState(packet.timestamp, ev.event, ev.duration, ev.end)
        if continued or ev.event >= len(DIGITS):
            return None
        return DtmfEvent(DIGITS[ev.event], ev.volume, ev.duration, packet.timestamp, packet.ssrc)


def rfc4733_packets(
    digit: str,
    *,
    payload_type: int,
    ssrc: int,
    sequence: int,
    timestamp: int,
    duration_ms: int = 100,
    volume: int = 10,
    packet_ms: int = 20,
    clock_rate: int = 8000,
) -> list[RtpPacket]:
    """The RTP packets of one key press as RFC 4733 §2.5.1 sends it: a start packet with the marker,
    updates every `packet_ms` with a growing duration, and the end packet sent three times."""
    if digit not in DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    event = DIGITS.index(digit)
    step = clock_rate * packet_ms // 1000
    total = max(step, clock_rate * duration_ms // 1000)
    durations = [*range(step, total, step), total]
    out = []
    for i, dur in enumerate(durations):
        end = i == len(durations) - 1
        body = TelephoneEvent(event, end, volume, dur).encode()
        for _ in range(3 if end else 1):
            out.append(RtpPacket(payload_type, (sequence + len(out)) & 0xFFFF, timestamp, ssrc, body, marker=i == 0))
    return out


class InbandDtmfDetector:
    """Goertzel detector for DTMF tones carried in the audio itself (8 kHz PCM).

    Each 136-sample block (17 ms: fine enough for 40 ms tones, coarse enough to separate the rows)
    is measured at the 8 keypad frequencies. A block holds a digit
    only if the strongest row and column tones are loud enough, within the allowed twist of each
    other, each well above the other tones of its group, and together carry most of the block's
    energy; speech spreads its energy over many frequencies and fails that last test. A digit is
    reported after `min_blocks` consecutive blocks agree and released after `release_blocks`
    blocks without it, so a held key gives one digit.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        block: int = 136,
        min_amplitude: float = 200.0,
        normal_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
        peak_ratio_db: float = 6.0,
        min_purity: float = 0.5,
        min_blocks: int = 2,
        release_blocks: int = 2,
    ) -> None:
        self.block = block
        n = np.arange(block)
        freqs = np.array(ROW_FREQS + COL_FREQS)
        angle = 2 * np.pi * np.outer(n, freqs) / sample_rate
        self._basis = np.exp(-1j * angle)  # block x 8: the Goertzel outputs, computed as one product
        # Energy (sum of squares over the block) of a sinusoid of amplitude A is A^2 * block / 2.
        self._min_energy = min_amplitude**2 * block / 2
        self._normal_twist = 10 ** (normal_twist_db / 10)
        self._reverse_twist = 10 ** (reverse_twist_db / 10)
        self._peak_ratio = 10 ** (peak_ratio_db / 10)
        self._min_purity = min_purity
        self._min_blocks = min_blocks
        self._release_blocks = release_blocks
        self._pending = np.zeros(0, dtype=np.float64)
        self._candidate: str | None = None
        self._hits = 0
        self._held: str | None = None
        self._misses = 0

    def feed(self, pcm: np.ndarray) -> list[str]:
        """Digits whose tones were confirmed in this audio (usually none)."""
        x = np.concatenate([self._pending, np.asarray(pcm, dtype=np.float64)])
        count = len(x) // self.block
        self._pending = x[count * self.block :]
        if count == 0:
            return []
        blocks = x[: count * self.block].reshape(count, self.block)
        out = []
        for digit in self._classify(blocks):
            confirmed = self._step(digit)
            if confirmed is not None:
                out.append(confirmed)
        return out

    def _classify(self, blocks: np.ndarray) -> list[str | None]:
        # Energy of each tone component over the block: 2|X|^2 / N for a real sinusoid.
        tone = 2 * np.abs(blocks @ self._basis) ** 2 / self.block
        total = np.einsum("ij,ij->i", blocks, blocks)
        rows, cols = tone[:, :4], tone[:, 4:]
        r = rows.argmax(axis=1)
        c = cols.argmax(axis=1)
        idx = np.arange(len(blocks))
        re, ce = rows[idx, r], cols[idx, c]
        rows_other = np.where(np.arange(4) == r[:, None], 0.0, rows).max(axis=1)
        cols_other = np.where(np.arange(4) == c[:, None], 0.0, cols).max(axis=1)
        ok = (
            (re >= self._min_energy)
            & (ce >= self._min_energy)
            & (ce <= re * self._normal_twist)
            & (re <= ce * self._reverse_twist)
            & (re >= rows_other * self._peak_ratio)
            & (ce >= cols_other * self._peak_ratio)
            & (re + ce >= self._min_purity * total)
        )
        return [_KEYPAD[ri][ci] if good else None for ri, ci, good in zip(r, c, ok, strict=True)]

    def _step(self, digit: str | None) -> str | None:
        if self._held is not None:
            if digit == self._held:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < self._release_blocks:
                return None
            self._held = None
        if digit is None:
            self._candidate, self._hits = None, 0
            return None
        if digit == self._candidate:
            self._hits += 1
        else:
            self._candidate, self._hits = digit, 1
        if self._hits < self._min_blocks:
            return None
        self._held, self._misses, self._candidate, self._hits = digit, 0, None, 0
        return digit
