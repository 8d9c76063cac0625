"""What a call session sees of a caller's media, whatever the transport (SIP/RTP or WebRTC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Decoded caller audio: mono int16 samples."""

    pcm: np.ndarray
    sample_rate: int
    # Event-loop time its packet reached the socket, where a transport knows it (the caller's wait
    # for an answer starts there, before any buffering); None: when it is read.
    arrival: float | None = None


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str  # one of 0-9 * # A-D
    source: Literal["rfc4733", "inband", "sip-info", "datachannel"]


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str  # "bye", "cancel", "timeout", "ice-failed", "server-shutdown", ...


MediaEvent = AudioFrame | DtmfDigit | Hangup


class MediaLeg(Protocol):
    """One caller's media. `recv` yields events in arrival order and a final `Hangup`."""

    async def recv(self) -> MediaEvent: ...

    async def play(self, pcm: np.ndarray, sample_rate: int) -> bool:
        """Send audio to the caller in real time; False if `stop_playback` cut it short."""
        ...

    def stop_playback(self) -> None: ...

    async def close(self, reason: str) -> None: ...
