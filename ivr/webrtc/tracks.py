"""Audio between aiortc and the call session: the paced outbound track and the inbound frame converter."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

OUT_RATE = 48000  # what aiortc's Opus encoder wants natively; its G.711 encoder downsamples
FRAME_SAMPLES = OUT_RATE // 50  # 20 ms
_FRAME_S = FRAME_SAMPLES / OUT_RATE
# After a stall longer than this (event loop busy, sender paused), restart the clock instead of
# bursting the backlog out: a burst makes the browser's jitter buffer time-stretch the prompt.
_MAX_LATE_S = 0.2


class _Playback:
    __slots__ = ("done", "pcm", "pos")

    def __init__(self, pcm: np.ndarray) -> None:
        self.pcm = pcm
        self.pos = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finish(self, completed: bool) -> None:
        if not self.done.done():
            self.done.set_result(completed)


class PlayoutTrack(MediaStreamTrack):
    """Outbound audio: 20 ms mono 48 kHz frames paced in real time, silence whenever nothing plays.

    Silence keeps RTP flowing so the far end's jitter buffer stays primed between prompts. At most one
    playback is queued in the track at a time (`WebRtcLeg` serialises `play` calls).
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._current: _Playback | None = None
        self._t0: float | None = None
        self._sent = 0  # samples sent since _t0
        self._pts = 0
        self._silence = np.zeros(FRAME_SAMPLES, np.int16)

    def start(self, pcm48k: np.ndarray) -> asyncio.Future[bool]:
        """Queue `pcm48k` (mono int16 at 48 kHz); the future is True once sent, False if cut."""
        if self._current is not None:
            raise RuntimeError("a playback is already in progress")
        pb = _Playback(pcm48k)
        if self.readyState != "live" or pcm48k.size == 0:
            pb.finish(self.readyState == "live")
            return pb.done
        self._current = pb
        return pb.done

    def cut(self) -> None:
        """Drop what is left of the current playback; the next frame is silence."""
        if self._current is not None:
            self._current.finish(False)
            self._current = None

    def stop(self) -> None:
        self.cut()
        super().stop()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None or now - (self._t0 + self._sent / OUT_RATE) > _MAX_LATE_S:
            self._t0, self._sent = now, 0
        wait = self._t0 + self._sent / OUT_RATE - now
        if wait > 0:
            await asyncio.sleep(wait)
        if self.readyState != "live":
            raise MediaStreamError
        chunk = self._next_chunk()
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUT_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, OUT_RATE)
        self._sent += FRAME_SAMPLES
        self._pts += FRAME_SAMPLES
        return frame

    def _next_chunk(self) -> np.ndarray:
        pb = self._current
        if pb is None:
            return self._silence
        chunk = pb.pcm[pb.pos : pb.pos + FRAME_SAMPLES]
        pb.pos += FRAME_SAMPLES
        if pb.pos >= pb.pcm.size:
            self._current = None
            pb.finish(True)
        if chunk.size < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, np.zeros(FRAME_SAMPLES - chunk.size, np.int16)])
        return chunk


class InboundConverter:
    """aiortc's decoded frames (48 kHz stereo for Opus, 8 kHz mono for G.711) -> mono int16 at one rate."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._src: tuple[int, str, str] | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        src = (frame.sample_rate, frame.layout.name, frame.format.name)
        if src != self._src:  # a codec change mid-call (re-offer) needs a fresh resampler
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._src = src
        assert self._resampler is not None
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, np.int16)
        return np.concatenate(out).astype(np.int16, copy=False)
