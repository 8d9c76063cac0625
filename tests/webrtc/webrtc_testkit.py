"""Shared pieces of the WebRTC tests: a loopback test server, a call harness, an in-process caller."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from aiohttp import ClientSession, ClientTimeout, web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from multidict import CIMultiDict

from asr_engine.audio.resample import resample_int16
from ivr.media.events import AudioFrame, DtmfDigit, Hangup
from ivr.webrtc.endpoint import CallInfo
from ivr.webrtc.ice import keep_loopback_candidates, pinned_host_addresses
from ivr.webrtc.leg import WebRtcLeg
from ivr.webrtc.tracks import OUT_RATE, InboundConverter, PlayoutTrack

LOOPBACK = ("127.0.0.1",)
PEERS = Path(os.environ.get("PEERS_KIT", Path(__file__).resolve().parents[3] / "shared" / "peers"))
WORK = Path(os.environ.get("PEERS_WORK", "/tmp/peers-work"))
AUDIO = WORK / "audio"


def peers_common() -> ModuleType:
    """The peers kit's common.py (WAV I/O, correlation), loaded without writing bytecode into the kit."""
    path = PEERS / "common.py"
    spec = importlib.util.spec_from_file_location("peers_common", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 on an ephemeral port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@dataclass
class CallHarness:
    """An `on_call` that records the caller, plays `prompt` (with a lead-in of silence), answers keypad
    digits with a "route" event, and hangs up after `record_s` of caller audio (or when the caller does)."""

    prompt: np.ndarray
    prompt_rate: int
    record_s: float
    prompt_lead_in_s: float = 0.0
    limit_s: float = 30.0
    audio: list[np.ndarray] = field(default_factory=list)
    rate: int = 0
    digits: list[str] = field(default_factory=list)
    hangup: Hangup | None = None
    play_result: bool | None = None
    info: CallInfo | None = None
    leg: WebRtcLeg | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, leg: WebRtcLeg, info: CallInfo) -> None:
        self.info, self.leg = info, leg
        try:
            await self._run(leg)
        finally:
            self.done.set()

    async def _run(self, leg: WebRtcLeg) -> None:
        leg.send_event({"type": "prompt", "text": "Welcome to voicenav. How can I help?"})
        lead = np.zeros(int(self.prompt_lead_in_s * self.prompt_rate), np.int16)
        play = asyncio.create_task(leg.play(np.concatenate([lead, self.prompt]), self.prompt_rate))
        samples = 0
        async with asyncio.timeout(self.limit_s):
            while True:
                ev = await leg.recv()
                if isinstance(ev, AudioFrame):
                    self.audio.append(ev.pcm)
                    self.rate = ev.sample_rate
                    samples += ev.pcm.size
                    if samples >= self.record_s * ev.sample_rate and play.done():
                        break
                elif isinstance(ev, DtmfDigit):
                    self.digits.append(ev.digit)
                    leg.send_event({"type": "route", "queue": "billing"})
                elif isinstance(ev, Hangup):
                    self.hangup = ev
                    break
            self.play_result = await play
        if self.hangup is None:
            leg.send_event({"type": "transcript", "text": "I have a question about my bill"})
            await leg.close("bye")
            self.hangup = Hangup("bye")

    @property
    def received(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)


class _Recorder:
    def __init__(self, rate: int) -> None:
        self.conv = InboundConverter(rate)
        self.chunks: list[np.ndarray] = []
        self.ended = asyncio.Event()

    async def run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                self.chunks.append(self.conv.convert(await track.recv()))
        except MediaStreamError:
            self.ended.set()


class InProcessCaller:
    """A minimal aiortc caller in the test process, with the page's data-channel protocol."""

    def __init__(self, *, codec: str | None = None, datachannel: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = PlayoutTrack()
        self.transceiver = self.pc.addTransceiver(self.mic, direction="sendrecv")
        if codec is not None:
            caps = RTCRtpSender.getCapabilities("audio").codecs
            self.transceiver.setCodecPreferences([c for c in caps if c.mimeType == f"audio/{codec}"])
        self.events: list[dict[str, Any]] = []
        self.event_seen = asyncio.Event()
        self.recorder = _Recorder(8000)
        self.channel = self.pc.createDataChannel("control") if datachannel else None
        self.opened = asyncio.Event()
        if self.channel is not None:
            self.channel.on("message", self._on_message)
            self.channel.on("open", self.opened.set)
        self.pc.on("track", lambda t: asyncio.ensure_future(self.recorder.run(t)))

    def _on_message(self, message: str) -> None:
        self.events.append(json.loads(message))
        self.event_seen.set()

    async def offer_sdp(self) -> str:
        with pinned_host_addresses(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def call(self, base_url: str, *, path: str = "/webrtc/offer") -> tuple[int, dict[str, Any]]:
        sdp = await self.offer_sdp()
        status, body = await post_offer(base_url, {"sdp": sdp, "type": "offer"}, path=path)
        if status == 200:
            answer = keep_loopback_candidates(body["sdp"])[0]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return status, body

    def speak(self, pcm: np.ndarray, rate: int) -> asyncio.Future[bool]:
        return self.mic.start(resample_int16(pcm, rate, OUT_RATE))

    async def wait_open(self, within_s: float = 5.0) -> None:
        assert self.channel is not None
        if self.channel.readyState != "open":
            await asyncio.wait_for(self.opened.wait(), within_s)

    async def wait_event(self, type_: str, within_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while True:
                for ev in self.events:
                    if ev.get("type") == type_:
                        return ev
                self.event_seen.clear()
                await self.event_seen.wait()

    async def close(self) -> None:
        self.mic.stop()
        await self.pc.close()


async def post_json(
    url: str, body: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST `body` as JSON (or `raw` bytes, still labelled application/json)."""
    async with ClientSession(timeout=ClientTimeout(total=10)) as s:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        headers = {"Content-Type": "application/json", **(headers or {})}
        async with s.post(url, headers=headers, **kwargs) as r:
            data = await r.json(content_type=None)
            data["_retry_after"] = r.headers.get("Retry-After")
            return r.status, data


async def offer_token(base_url: str) -> str:
    """A single-use offer token, as the softphone page gets one before each call."""
    async with ClientSession(timeout=ClientTimeout(total=10)) as s, s.get(base_url + "/webrtc/token") as r:
        assert r.status == 200, await r.text()
        return (await r.json())["token"]


@web.middleware
async def token_for_tokenless_peers(request: web.Request, handler: Any) -> web.StreamResponse:
    """Fetches an offer token for a peer that posts offers without one (the peers kit's aiortc
    client knows nothing of tokens), as the softphone page does before each call."""
    if request.path == "/webrtc/offer" and "X-Offer-Token" not in request.headers:
        headers = CIMultiDict(request.headers)
        headers["X-Offer-Token"] = await offer_token(f"{request.scheme}://{request.host}")
        request = request.clone(headers=headers)
    return await handler(request)


async def post_offer(
    base_url: str, body: Any, *, raw: bytes | None = None, path: str = "/webrtc/offer"
) -> tuple[int, dict[str, Any]]:
    """POST an offer the way the softphone page does: with a fresh token."""
    token = await offer_token(base_url)
    return await post_json(base_url + path, body, raw=raw, headers={"X-Offer-Token": token})


async def wait_until(predicate: Any, within_s: float, what: str) -> None:
    """Check `predicate` every 20 ms for at most `within_s` seconds."""
    for _ in range(int(within_s / 0.02) + 1):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within_s} s: {what}")


async def run_bounded(*cmd: str | Path, limit_s: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a subprocess without blocking the loop (the server under test shares it); kill on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *map(str, cmd),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        raise AssertionError(f"{cmd[0]} timed out after {limit_s} s:\n{text}") from None
    return proc.returncode or 0, out.decode(errors="replace")
