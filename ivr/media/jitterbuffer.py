"""Receive-side jitter buffer for one caller's 8 kHz audio stream (G.711, any packet duration).

Packets are pushed as they arrive (already decoded to PCM) and `pop` returns the frames that are due.
Sequence numbers decide order, loss, lateness and duplicates; RTP timestamps decide timing. The
buffer is pure: the caller passes the monotonic time in, so it is tested without sockets.

The audio goes to a recognizer, not to an ear: a frame that is next in sequence is released as soon
as it arrives, without a fixed playout delay (on a clean path that delay is only time the caller
waits for an answer). Only a missing frame is waited for, up to the target delay, which follows the
RFC 3550 inter-arrival jitter estimate between `min_delay` and `max_delay`: a packet reordered within
it comes out in order, and past it the missing frame is concealed by repeating the last frame, fading,
for at most `max_conceal` frames, then by silence. When the stream stops (hold, DTMF, silence
suppression) the buffer keeps producing silence, one frame per frame time once the next frame is
overdue, so that downstream voice-activity detection sees time pass.
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
    "Jitter buffer events: lost, late, duplicate, concealed, overflow, underrun, ssrc_change, resync",
    ["event"],
)

# RFC 3550 appendix A.1: a forward jump this large, or a backward one beyond MAX_MISORDER, is a
# sender restart rather than loss or reordering.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
# Silence owed for longer than this (the process was stalled) is skipped, not sent in one burst.
MAX_CATCH_UP_S = 1.0


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    pcm: np.ndarray  # int16
    kind: Literal["audio", "concealed", "silence"]
    arrival: float  # when its packet arrived; for a concealed or silent frame, when it was made


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    concealed: int = 0
    overflow: int = 0
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
    stats: JitterStats = field(default_factory=JitterStats)

    _ssrc: int | None = None
    _buffer: dict[int, _Entry] = field(default_factory=dict)
    _ext_ref: int = 0  # extended sequence number of the last packet, for unwrapping
    _have_ref: bool = False
    _probation_seq: int | None = None
    _next_seq: int | None = None
    _playout_ts: int = 0
    _playing: bool = False  # False: not started, or the stream ran dry (silence is being made)
    _expected: float | None = None  # when the next frame should arrive; it is overdue a target delay later
    _played_recent: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    _last_pcm: np.ndarray | None = None
    _drain: deque[_Entry] = field(default_factory=deque)
    _conceal_run: int = 0
    _nominal: int = 0
    _jitter: float = 0.0  # seconds
    _last_transit: float | None = None

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
        """How long a missing frame is waited for before it is concealed."""
        frame = self._nominal / self.sample_rate
        # Two frames of headroom under max_delay, so a burst while waiting is not an overflow.
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
        """The next frame if it is due at `now`, else None; call until None to take every due frame."""
        if self._drain:
            entry = self._drain.popleft()
            assert entry.pcm is not None
            self._expected = entry.arrival + len(entry.pcm) / self.sample_rate
            return self._play_pcm(entry.pcm, entry.arrival)
        if not self._playing and self._buffer:
            oldest = min(self._buffer)
            # The first packet, or the stream going on where it stopped, plays at once; a gap after
            # the stream ran dry is waited on like any missing frame, then skipped (silence stood in).
            if self._next_seq is None or oldest == self._next_seq or self._waited(oldest, now):
                self._start()
        if not self._playing:
            return self._fill(now)
        assert self._next_seq is not None
        entry = self._buffer.pop(self._next_seq, None)
        if entry is None:
            if not self._overdue(now):
                return None
            if not self._buffer:
                self._playing = False
                self._count("underrun")
                return self._fill(now)
            self._count("lost")
            self._next_seq += 1
            self._playout_ts = (self._playout_ts + self._nominal) & 0xFFFFFFFF
            self._advance(self._nominal)
            return self._conceal(now)
        self._played_recent.append(self._next_seq)
        self._next_seq += 1
        if entry.pcm is None:
            self._playout_ts = (self._playout_ts + self._nominal) & 0xFFFFFFFF
            self._expected = entry.arrival + self._nominal / self.sample_rate
            self._conceal_run = self.max_conceal  # a deliberate pause: silence, not a repeat
            return PlayoutFrame(np.zeros(self._nominal, np.int16), "silence", entry.arrival)
        # Contiguous sequence numbers with a timestamp jump: the sender skipped time (silence
        # suppression, a gateway re-timing); follow its timestamps rather than conceal.
        if entry.timestamp != self._playout_ts:
            self._count("resync")
        self._playout_ts = (entry.timestamp + len(entry.pcm)) & 0xFFFFFFFF
        self._expected = entry.arrival + len(entry.pcm) / self.sample_rate
        return self._play_pcm(entry.pcm, entry.arrival)

    def _waited(self, seq: int, now: float) -> bool:
        return now - self._buffer[seq].arrival >= self.target_delay

    def _overdue(self, now: float) -> bool:
        """Whether the missing next frame has been waited for long enough: a target delay past when it
        should have come, or past the arrival of a later packet (it is out of order, if anything)."""
        assert self._expected is not None
        if now - self._expected >= self.target_delay:
            return True
        return bool(self._buffer) and self._waited(min(self._buffer), now)

    def _advance(self, samples: int) -> None:
        assert self._expected is not None
        self._expected += samples / self.sample_rate

    def _fill(self, now: float) -> PlayoutFrame | None:
        """A concealed or silent frame while the stream has run dry, one per frame time."""
        if self._expected is None or now - self._expected < self.target_delay:
            return None
        if now - self._expected - self.target_delay > MAX_CATCH_UP_S:
            self._expected = now - self.target_delay
        self._advance(self._nominal)
        return self._conceal(now)

    def _play_pcm(self, pcm: np.ndarray, arrival: float) -> PlayoutFrame:
        self._last_pcm = pcm
        self._conceal_run = 0
        self.stats.played += 1
        return PlayoutFrame(pcm, "audio", arrival)

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

    def _conceal(self, now: float) -> PlayoutFrame:
        self._conceal_run += 1
        if self._last_pcm is not None and self._conceal_run <= self.max_conceal:
            self._count("concealed")
            gain = 0.5**self._conceal_run
            return PlayoutFrame((self._last_pcm * gain).astype(np.int16), "concealed", now)
        return PlayoutFrame(np.zeros(self._nominal, np.int16), "silence", now)

    def _reset(self, ssrc: int | None) -> None:
        # What the old stream still had buffered plays out first: a gateway switching streams
        # should not cost the caller the last words of the old one.
        self._drain.extend(e for _, e in sorted(self._buffer.items()) if e.pcm is not None)
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
