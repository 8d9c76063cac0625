"""One WebRTC caller as a `MediaLeg`: audio in/out over aiortc, keypad and hang-up over a data channel.

Data-channel protocol (JSON text messages, any channel label; the softphone page opens "control"):
  page -> server  {"type": "dtmf", "digit": "5"}     {"type": "hangup"}
  server -> page  any JSON object with a "type" (see `send_event`), and {"type": "hangup", "reason": ...}
                  when the server ends the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import Annotated, Any, Literal

import av
import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from asr_engine.audio.resample import resample_int16
from ivr.media.events import AudioFrame, DtmfDigit, Hangup, MediaEvent
from ivr.webrtc.tracks import OUT_RATE, InboundConverter, PlayoutTrack

log = logging.getLogger(__name__)

HANGUPS = Counter("voicenav_webrtc_hangups_total", "WebRTC calls ended, by reason", ["reason"])
CONNECT_SECONDS = Histogram(
    "voicenav_webrtc_connect_seconds",
    "Time from answer to ICE+DTLS connected",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
DATACHANNEL_REJECTED = Counter(
    "voicenav_webrtc_datachannel_rejected_total", "Data-channel messages ignored, by reason", ["reason"]
)
DTMF_RECEIVED = Counter("voicenav_webrtc_dtmf_total", "Keypad digits received over the data channel")
AUDIO_DROPPED = Counter(
    "voicenav_webrtc_audio_dropped_frames_total", "Caller audio frames dropped because the call session fell behind"
)
AUDIO_REJECTED = Counter(
    "voicenav_webrtc_audio_rejected_frames_total", "Decoded caller frames that could not be converted"
)
EVENTS_DROPPED = Counter("voicenav_webrtc_events_dropped_total", "Events for the page dropped (no open data channel)")

_MAX_MESSAGE_CHARS = 1024


class _DtmfMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["dtmf"]
    digit: Annotated[str, Field(pattern=r"^[0-9*#A-D]$")]


class _HangupMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["hangup"]


_PageMessage = TypeAdapter(Annotated[_DtmfMessage | _HangupMessage, Field(discriminator="type")])


class WebRtcLeg:
    """A connected (or connecting) WebRTC caller. Created by `WebRtcEndpoint`, handed to `on_call`.

    `recv` yields `AudioFrame` (mono int16 at `sample_rate`, about 20 ms each), `DtmfDigit` from the page's
    keypad and a final `Hangup`: "bye" (the page hung up or closed its connection), "ice-failed" (ICE or
    DTLS failed, or no connection within `connect_timeout_s`), or the reason given to `close`.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        call_id: str,
        *,
        sample_rate: int = 16000,
        connect_timeout_s: float = 15.0,
        max_queued_frames: int = 500,
        max_pending_events: int = 64,
    ) -> None:
        self.call_id = call_id
        self.sample_rate = sample_rate
        self._pc = pc
        self._out = PlayoutTrack()
        self._converter = InboundConverter(sample_rate)
        self._events: deque[MediaEvent] = deque()
        self._ready = asyncio.Event()
        self._queued_frames = 0
        self._max_queued_frames = max_queued_frames
        self._final: Hangup | None = None
        self._closed = asyncio.Event()
        self._connected = asyncio.Event()
        self._play_lock = asyncio.Lock()
        self._play_generation = 0
        self._channel: RTCDataChannel | None = None
        self._pending_events: deque[str] = deque(maxlen=max_pending_events)
        self._tasks: set[asyncio.Task[None]] = set()
        self._connect_timeout_s = connect_timeout_s
        self._close_lock = asyncio.Lock()
        self._answered_at = time.monotonic()
        self._pumping = False
        self._peer_hung_up = False  # the page said "hangup": no need to tell it why the call ended

        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    @property
    def outbound_track(self) -> MediaStreamTrack:
        return self._out

    @property
    def ended(self) -> bool:
        return self._final is not None

    def start(self) -> None:
        """Arm the connect timeout; called once the answer is sent."""
        self._answered_at = time.monotonic()
        self._spawn(self._watch_connect())

    # ------------------------------------------------------------------ MediaLeg
    async def recv(self) -> MediaEvent:
        while not self._events:
            if self._final is not None:
                return self._final
            self._ready.clear()
            await self._ready.wait()
        ev = self._events.popleft()
        if isinstance(ev, AudioFrame):
            self._queued_frames -= 1
        return ev

    async def play(self, pcm: np.ndarray, sample_rate: int) -> bool:
        """Send `pcm` (mono int16) to the caller in real time; False if cut by `stop_playback`/hang-up.

        Calls are served one after another; `stop_playback` also cancels the ones waiting.
        """
        generation = self._play_generation
        async with self._play_lock:
            if generation != self._play_generation or self._final is not None:
                return False
            pcm48k = await asyncio.to_thread(resample_int16, pcm, sample_rate, OUT_RATE)
            if generation != self._play_generation or self._final is not None:
                return False
            done = self._out.start(pcm48k)
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the caller of play() is cancelled: the prompt must not go on
                closed.cancel()
                if not done.done():
                    self._out.cut()
            return done.result()

    def stop_playback(self) -> None:
        self._play_generation += 1
        self._out.cut()

    async def close(self, reason: str) -> None:
        """End the call (idempotent): tell the page why, close the peer connection, final `Hangup`."""
        async with self._close_lock:
            if not self._closed.is_set():
                self._set_final(reason)
                EVENTS_DROPPED.inc(len(self._pending_events))  # the data channel never opened
                self._pending_events.clear()
                await self._notify_page_hangup(reason)
                self._out.stop()
                self._closed.set()
                await self._pc.close()
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def discard(self) -> None:
        """Tear down a leg whose call never started (the offer was refused): no `Hangup` is counted."""
        self._closed.set()
        self._out.stop()
        await self._pc.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ page events
    def send_event(self, event: Mapping[str, Any]) -> None:
        """Send a JSON event to the page (e.g. {"type": "transcript", "text": ...}, {"type": "prompt",
        "text": ...}, {"type": "route", "queue": ...}). Queued (up to `max_pending_events`) until the data
        channel opens; dropped and counted once the call has ended or if the channel never opens."""
        if "type" not in event:
            raise ValueError("an event needs a 'type'")
        text = json.dumps(dict(event))  # TypeError for non-JSON values: a caller bug, not peer input
        ch = self._channel
        if self._final is not None:
            EVENTS_DROPPED.inc()
        elif ch is not None and ch.readyState == "open":
            ch.send(text)
        else:
            if len(self._pending_events) == self._pending_events.maxlen:
                EVENTS_DROPPED.inc()
            self._pending_events.append(text)

    # ------------------------------------------------------------------ aiortc callbacks
    def _on_track(self, track: MediaStreamTrack) -> None:
        # One caller, one voice: a second audio section in the offer would interleave in the converter.
        if track.kind == "audio" and not self._pumping:
            self._pumping = True
            self._spawn(self._pump_audio(track))

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is None:
            self._channel = channel

            @channel.on("open")
            def _flush() -> None:
                self._flush_pending()

            if channel.readyState == "open":
                self._flush_pending()
        channel.on("message", self._on_message)

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and not self._connected.is_set():
            self._connected.set()
            CONNECT_SECONDS.observe(time.monotonic() - self._answered_at)
        elif state == "failed":
            self._spawn(self.close("ice-failed"))
        elif state == "closed" and not self._closed.is_set():
            # aiortc closes the connection when the peer shuts DTLS down: the page or client hung up.
            self._spawn(self.close("bye"))

    def _on_message(self, message: str | bytes) -> None:
        if not isinstance(message, str):
            DATACHANNEL_REJECTED.labels("not-text").inc()
            return
        if len(message) > _MAX_MESSAGE_CHARS:
            DATACHANNEL_REJECTED.labels("too-large").inc()
            return
        try:
            msg = _PageMessage.validate_json(message)
        except ValidationError as exc:
            DATACHANNEL_REJECTED.labels("invalid").inc()
            log.info("call %s: ignoring data-channel message: %s", self.call_id, exc.errors()[0]["msg"])
            return
        if isinstance(msg, _DtmfMessage):
            DTMF_RECEIVED.inc()
            self._put(DtmfDigit(msg.digit, "datachannel"))
        else:
            self._peer_hung_up = True
            self._spawn(self.close("bye"))

    # ------------------------------------------------------------------ internals
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _put(self, ev: MediaEvent) -> None:
        if self._final is not None:
            return
        if isinstance(ev, AudioFrame):
            if self._queued_frames >= self._max_queued_frames:
                AUDIO_DROPPED.inc()
                return
            self._queued_frames += 1
        self._events.append(ev)
        self._ready.set()

    def _set_final(self, reason: str) -> None:
        if self._final is None:
            self._final = Hangup(reason)
            HANGUPS.labels(reason).inc()
            log.info("call %s: ended (%s)", self.call_id, reason)
            self._events.append(self._final)
            self._ready.set()

    def _flush_pending(self) -> None:
        ch = self._channel
        while self._pending_events and ch is not None and ch.readyState == "open":
            ch.send(self._pending_events.popleft())

    async def _notify_page_hangup(self, reason: str) -> None:
        ch = self._channel
        if self._peer_hung_up or ch is None or ch.readyState != "open" or self._pc.connectionState != "connected":
            return
        ch.send(json.dumps({"type": "hangup", "reason": reason}))
        # Let SCTP hand the message to the transport before the connection goes away (bounded).
        for _ in range(20):
            if ch.bufferedAmount == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)

    async def _pump_audio(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                try:
                    pcm = self._converter.convert(frame)
                except (av.FFmpegError, ValueError) as exc:
                    AUDIO_REJECTED.inc()
                    log.info("call %s: dropping an undecodable audio frame: %s", self.call_id, exc)
                    continue
                if pcm.size:
                    self._put(AudioFrame(pcm, self.sample_rate))
        except MediaStreamError:
            return

    async def _watch_connect(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout_s)
        except TimeoutError:
            log.info("call %s: no connection after %.1f s", self.call_id, self._connect_timeout_s)
            self._spawn(self.close("ice-failed"))
