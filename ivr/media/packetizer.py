"""Outbound RTP stream state: one SSRC whose sequence numbers and timestamps stay continuous across
prompts, with the marker bit on the first packet of each talkspurt (RFC 3551 §4.1)."""

from __future__ import annotations

import secrets

from ivr.media.rtp import RtpPacket


class RtpPacketizer:
    def __init__(self, clock_rate: int = 8000, ssrc: int | None = None) -> None:
        self.clock_rate = clock_rate
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        # Random initial sequence number and timestamp, as RFC 3550 §5.1 asks.
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._last_send: float | None = None
        self._last_samples = 0
        self._talkspurt = True

    def start_talkspurt(self) -> None:
        """The next packet begins a talkspurt: marker set, timestamp advanced by the real pause."""
        self._talkspurt = True

    def packet(self, payload_type: int, payload: bytes, samples: int, now: float) -> RtpPacket:
        """The next packet of the stream, carrying `samples` samples, sent at monotonic time `now`."""
        if self._last_send is not None:
            step = self._last_samples
            if self._talkspurt:
                # The timestamp keeps counting sampling instants through the silence between prompts.
                step = max(step, round((now - self._last_send) * self.clock_rate))
            self._ts = (self._ts + step) & 0xFFFFFFFF
            self._seq = (self._seq + 1) & 0xFFFF
        pkt = RtpPacket(payload_type, self._seq, self._ts, self.ssrc, payload, marker=self._talkspurt)
        self._talkspurt = False
        self._last_send = now
        self._last_samples = samples
        return pkt
