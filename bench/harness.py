"""Calls through the real call path without a network: a `CallSession` with the real VAD, recognizer,
dialog and prompts, a media leg that plays prompts in real time and timestamps them, and a caller
that sends 20 ms frames on the real-time clock and timestamps its voiced ones.

    async with call_deps(flow, VadConfig()) as deps:
        leg, caller = TimedLeg(), ...; session = CallSession(..., leg, Control(), deps)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
import yaml

from asr_engine.batcher import BatchingRecognizer
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import SileroVad, VadConfig
from asr_engine.vad_batch import VadBatcher
from dialog.context import MemoryContextStore
from dialog.flow import Flow, parse_flow
from dialog.policy import DialogPolicy
from dialog.records import MemoryRecordStore
from ivr.calls.admission import Transport
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer
from ivr.calls.session import CallDeps
from ivr.media.events import AudioFrame, Hangup, MediaEvent

from .common import MODEL_CACHE, ROOT

FRAME = 160  # 20 ms at 8 kHz, as RTP carries it
VOICED = 300  # peak level of a frame with speech energy (the line's noise floor stays below)
PROMPT_CACHE = ROOT / ".cache" / "test-prompts"


@dataclass
class Played:
    started: float  # loop time of the first sample
    seconds: float  # the audio given
    ended: float | None = None  # loop time of the last sample sent
    done: bool = False  # played to the end


class TimedLeg:
    """Media as a script drives it: `recv` yields what `feed` put in; `play` lasts as long as the
    audio, in real time, unless `stop_playback` cuts it; every play is timestamped."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._stop: asyncio.Event | None = None
        self.plays: list[Played] = []

    def feed(self, event: MediaEvent) -> None:
        self._events.put_nowait(event)

    async def recv(self) -> MediaEvent:
        return await self._events.get()

    async def play(self, pcm: np.ndarray, sample_rate: int) -> bool:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        played = Played(loop.time(), len(pcm) / sample_rate)
        self.plays.append(played)
        try:
            await asyncio.wait_for(self._stop.wait(), played.seconds)
        except TimeoutError:
            played.done = True
        played.ended = loop.time()
        return played.done

    def stop_playback(self) -> None:
        if self._stop is not None:
            self._stop.set()

    @property
    def playing(self) -> bool:
        return bool(self.plays) and self.plays[-1].ended is None

    async def close(self, reason: str) -> None:
        self.feed(Hangup(reason))


@dataclass
class Control:
    transport: Transport = "webrtc"
    done: list[tuple[str, str]] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (loop time, event)

    async def route(self, queue: str) -> None:
        self.done.append(("route", queue))

    async def transfer(self, uri: str) -> None:
        self.done.append(("transfer", uri))

    async def hangup(self, reason: str) -> None:
        self.done.append(("hangup", reason))

    def notify(self, event: dict[str, Any]) -> None:
        self.events.append((asyncio.get_running_loop().time(), event))

    def transcripts(self) -> list[tuple[float, str]]:
        """When each turn's transcript was final, and its text."""
        return [(t, e["text"]) for t, e in self.events if e["type"] == "transcript"]


class Caller:
    """Sends 20 ms frames to the leg on the real-time clock: what `say` queued, else silence (a phone
    keeps sending while the caller listens); remembers when each frame with speech energy went."""

    def __init__(self, leg: TimedLeg) -> None:
        self.leg = leg
        self.voiced: list[float] = []  # loop times of frames with speech energy
        self._queued = np.zeros(0, np.int16)
        self._task = asyncio.create_task(self._send())

    def say(self, pcm: np.ndarray) -> None:
        self._queued = np.concatenate([self._queued, pcm])

    async def said(self, within: float = 60) -> float:
        """Wait until everything queued has been sent; the loop time it was."""
        await until(lambda: len(self._queued) == 0, within, interval=0.01)
        return asyncio.get_running_loop().time()

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while True:
            frame, self._queued = self._queued[:FRAME], self._queued[FRAME:]
            frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
            if np.abs(frame.astype(np.int32)).max() >= VOICED:
                self.voiced.append(loop.time())
            self.leg.feed(AudioFrame(frame, 8000))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * FRAME / 8000 - loop.time()))

    def stop(self) -> None:
        self._task.cancel()


async def until(check: Any, within: float, interval: float = 0.02) -> bool:
    """Poll `check()` until it is true or `within` seconds have passed; whether it came true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def demo_policy(prompt: str, start: str | None = None) -> DialogPolicy:
    """The demo flow, starting at `start` (its own start by default) with `prompt` as that node's
    opening prompt: its own is long, and every call would wait it out."""
    data = yaml.safe_load(resources.files("dialog").joinpath("flows/demo.yaml").read_text(encoding="utf-8"))
    data["start"] = start or data["start"]
    data["nodes"][data["start"]]["prompt"] = {"text": prompt}
    return DialogPolicy(parse_flow(yaml.safe_dump(data)))


@asynccontextmanager
async def call_deps(flow: Flow, vad_config: VadConfig) -> AsyncIterator[CallDeps]:
    """What the calls of one run share: tiny.en behind the batching worker, one VAD thread, the
    prompts of `flow` rendered ahead."""
    recognizer = await asyncio.to_thread(Recognizer, RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    batcher = BatchingRecognizer(recognizer)
    vad_batcher = VadBatcher(await asyncio.to_thread(SileroVad))
    prompts = PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE)))
    await prompts.warm(flow)
    try:
        yield CallDeps(
            policy=DialogPolicy(flow),
            contexts=MemoryContextStore(),
            records=MemoryRecordStore(),
            prompts=prompts,
            recognizer=batcher,
            speech_stream=partial(RecognitionStream, vad_batcher.vad, vad_config),
            vad=vad_batcher,
        )
    finally:
        await asyncio.to_thread(batcher.close)
        vad_batcher.close()
