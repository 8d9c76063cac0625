"""Receive-side jitter buffer for one caller's 8 kHz audio stream (G.711, any packet duration).

Packets are pushed as they arrive (already decoded to PCM) and a playout clock pops one frame per
frame time. Sequence numbers decide order, loss, lateness and duplicates; RTP timestamps decide
timing. The buffer is pure: the caller passes the monotonic time in, so it is tested without sockets.

Playout starts (and restarts after an underrun) once the oldest buffered packet has waited the
target delay, which follows the RFC 3550 inter-arrival jitter estimate between `min_delay` and
`max_delay`. A missing packet is concealed by repeating the last frame, fading, for at most
`max_conceal` frames, then by silence; when the stream stops (hold, DTMF, silence suppression) the
buffer keeps producing silence so that downstream voice-activity detection sees time pass.
The delay grows by itself after an underrun (playout waits for the target again) and shrinks
back by skipping a quiet frame once the buffer has held more than it needs for `shrink_after`
frames in a row.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from prometheus_client import Counter

from ivr.media.rtp import seq_delta

JITTER_EVENTS = Counter(
    "voicenav_rtp_jitter_events_total",
    "Jitter buffer events: lost, late, duplicate, concealed, overflow, shrink, underrun, ssrc_change, resync",
    ["event"],
)

# RFC 3550 appendix A.1: a forward jump this large, or a backward one beyond MAX_MISORDER, is a
# sender restart rather than loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    pcm: np.ndarray  # int16
    kind: Literal["audio", "concealed", "silence"]


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    concealed: int = 0
    overflow: int = 0
    shrink: int = 0
    underrun: int = 0
    ssrc_change: int = 0
    resync: int = 0
    foreign: int = 0  # placeholders from an SSRC other than the audio stream's


@dataclass(slots=True)
class _Entry:
    timestamp: int
    pcm: np.ndarray | None  # None: a non-audio packet (e.g. RFC 4733) that holds a sequence slot
    arrival: float


@dataclass(slots=True)
class JitterBuffer:
    sample_rate: int = 8000
    frame_samples: int = 160
    min_delay: float = 0.06
    max_delay: float = 0.2
    max_conceal: int = 3
    shrink_after: int = 10  # frames of excess depth before a quiet frame is skipped
    quiet_rms: float = 300.0  # a frame this quiet (about -40 dBFS) can be skipped unheard
    stats: JitterStats = field(default_factory=JitterStats)

    _ssrc: int | None = None
    _buffer: dict[int, _Entry] = field(default_factory=dict)
    _ext_ref: int = 0  # extended sequence number of the last packet, for unwrapping
    _have_ref: bool = False
    _probation_seq: int | None = None
    _next_seq: int | None = None
    _playout_ts: int = 0
    _playing: bool = False
    _ever_played: bool = False
    _played_recent: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    _last_pcm: np.ndarray | None = None
    _drain: deque[np.ndarray] = field(default_factory=deque)
    _conceal_run: int = 0
    _nominal: int = 0
    _jitter: float = 0.0  # seconds
    _last_transit: float | None = None
    _excess_run: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_delay <= self.max_delay:
            raise ValueError("need 0 < min_delay <= max_delay")
        self._nominal = self.frame_samples
        # Bounded like the buffer itself, so that a flood of SSRC changes cannot grow it.
        self._drain = deque(maxlen=int(self.max_delay * self.sample_rate / self.frame_samples) + 1)

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    @property
    def jitter(self) -> float:
        """RFC 3550 inter-arrival jitter estimate, in seconds."""
        return self._jitter

    @property
    def target_delay(self) -> float:
        frame = self._nominal / self.sample_rate
        # Two frames of headroom under max_delay, so a burst right after the start is not an overflow.
        upper = max(self.min_delay, self.max_delay - 2 * frame)
        return min(upper, max(self.min_delay, 3 * self._jitter + frame))

    @property
    def depth(self) -> float:
        """Buffered audio, in seconds."""
        return len(self._buffer) * self._nominal / self.sample_rate

    def push(self, seq: int, timestamp: int, ssrc: int, pcm: np.ndarray, now: float) -> None:
        """Add a decoded audio packet. A new SSRC resets the buffer onto the new stream."""
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                self._count("ssrc_change")
            self._reset(ssrc)
        self._insert(seq, timestamp, np.asarray(pcm, dtype=np.int16), now)

    def push_placeholder(self, seq: int, timestamp: int, ssrc: int, now: float) -> None:
        """Account for a non-audio packet of the audio stream (telephone-event, comfort noise) so that
        its sequence number is not mistaken for loss; it plays out as silence."""
        if ssrc != self._ssrc:
            self._count("foreign")
            return
        self._insert(seq, timestamp, None, now)

    def pop(self, now: float) -> PlayoutFrame | None:
        """The next frame due at `now`; None until the first packet has been buffered long enough."""
        if self._drain:
            return self._play_pcm(self._drain.popleft())
        if not self._playing:
            if not self._buffer or now - min(e.arrival for e in self._buffer.values()) < self.target_delay:
                return self._conceal() if self._ever_played else None
            self._start()
        assert self._next_seq is not None
        frame = self._nominal / self.sample_rate
        self._excess_run = self._excess_run + 1 if self.depth > self.target_delay + 2 * frame else 0
        entry = self._buffer.pop(self._next_seq, None)
        if entry is None:
            if not self._buffer:
                self._playing = False
                self._count("underrun")
                return self._conceal()
            self._count("lost")
            self._next_seq += 1
            self._playout_ts = (self._playout_ts + self._nominal) & 0xFFFFFFFF
            return self._conceal()
        self._played_recent.append(self._next_seq)
        self._next_seq += 1
        self._ever_played = True
        if entry.pcm is None:
            self._playout_ts = (self._playout_ts + self._nominal) & 0xFFFFFFFF
            self._conceal_run = self.max_conceal  # a deliberate pause: silence, not a repeat
            return PlayoutFrame(np.zeros(self._nominal, np.int16), "silence")
        # Contiguous sequence numbers with a timestamp jump: the sender skipped time (silence
        # suppression, a gateway re-timing); follow its timestamps rather than conceal.
        if entry.timestamp != self._playout_ts:
            self._count("resync")
        self._playout_ts = (entry.timestamp + len(entry.pcm)) & 0xFFFFFFFF
        if (
            self._excess_run >= self.shrink_after
            and self._next_seq in self._buffer
            and np.sqrt(np.mean(entry.pcm.astype(np.float64) ** 2)) < self.quiet_rms
        ):
            self._count("shrink")
            self._excess_run = 0
            return self.pop(now)
        return self._play_pcm(entry.pcm)

    def _play_pcm(self, pcm: np.ndarray) -> PlayoutFrame:
        self._last_pcm = pcm
        self._conceal_run = 0
        self._ever_played = True
        self.stats.played += 1
        return PlayoutFrame(pcm, "audio")

    def _insert(self, seq: int, timestamp: int, pcm: np.ndarray | None, now: float) -> None:
        ext = self._ext_ref + seq_delta(seq, self._ext_ref & 0xFFFF) if self._have_ref else seq
        self.stats.received += 1
        if self._next_seq is not None:
            ahead = ext - self._next_seq
            if ahead > MAX_DROPOUT or ahead < -MAX_MISORDER:
                # RFC 3550 A.1 probation: only a second packet continuing the jump proves a restart;
                # a single stray (a very late duplicate) must not throw the buffered audio away.
                if seq != self._probation_seq:
                    self._probation_seq = (seq + 1) & 0xFFFF
                    self._count("late")
                    return
                self._count("resync")
                self._reset(self._ssrc)
                ext = seq
            elif ahead < 0:
                self._count("duplicate" if ext in self._played_recent else "late")
                return
        if ext in self._buffer:
            self._count("duplicate")
            return
        self._ext_ref = ext
        self._have_ref = True
        self._buffer[ext] = _Entry(timestamp, pcm, now)
        if pcm is not None:
            if len(pcm):
                self._nominal = len(pcm)
            self._update_jitter(timestamp, now)
        while self.depth > self.max_delay and len(self._buffer) > 1:
            self._drop_oldest()

    def _update_jitter(self, timestamp: int, now: float) -> None:
        transit = now - timestamp / self.sample_rate
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            # A timestamp jump (talkspurt after silence) is not network jitter.
            if d < 1.0:
                self._jitter += (d - self._jitter) / 16
        self._last_transit = transit

    def _drop_oldest(self) -> None:
        oldest = min(self._buffer)
        del self._buffer[oldest]
        self._count("overflow")
        if self._next_seq is not None and oldest >= self._next_seq:
            self._next_seq = oldest + 1

    def _start(self) -> None:
        oldest = min(self._buffer)
        if self._next_seq is not None and oldest > self._next_seq:
            self.stats.lost += oldest - self._next_seq
            JITTER_EVENTS.labels("lost").inc(oldest - self._next_seq)
        self._next_seq = oldest
        self._playout_ts = self._buffer[oldest].timestamp
        self._playing = True

    def _conceal(self) -> PlayoutFrame:
        self._conceal_run += 1
        if self._last_pcm is not None and self._conceal_run <= self.max_conceal:
            self._count("concealed")
            gain = 0.5**self._conceal_run
            return PlayoutFrame((self._last_pcm * gain).astype(np.int16), "concealed")
        return PlayoutFrame(np.zeros(self._nominal, np.int16), "silence")

    def _reset(self, ssrc: int | None) -> None:
        # What the old stream still had buffered plays out first: a gateway switching streams
        # should not cost the caller the last words of the old one.
        self._drain.extend(e.pcm for _, e in sorted(self._buffer.items()) if e.pcm is not None)
        self._ssrc = ssrc
        self._buffer.clear()
        self._next_seq = None
        self._playing = False
        self._played_recent.clear()
        self._last_transit = None
        self._have_ref = False
        self._probation_seq = None

    def _count(self, event: str) -> None:
        setattr(self.stats, event, getattr(self.stats, event) + 1)
        JITTER_EVENTS.labels(event).inc()
