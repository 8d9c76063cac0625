"""How long the caller waits, with a scripted media leg that sends 20 ms frames in real time (the real
VAD, recognizer, dialog and prompts): the recorded turn latency starts at the caller's last voiced audio,
so it includes the endpointing silence."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import pytest_asyncio
from callers import CALLERS_DEV, MODEL_CACHE, PROMPT_CACHE, poll
from test_call_session import Control, ScriptedLeg

from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav
from asr_engine.batcher import BatchingRecognizer
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.vad import SileroVad, VadConfig
from dialog.context import MemoryContextStore
from dialog.flow import parse_flow
from dialog.policy import DialogPolicy
from dialog.records import CallRecord, MemoryRecordStore
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer
from ivr.calls.session import CallDeps, CallSession
from ivr.media.events import AudioFrame

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

RATE = 8000
FRAME = 160  # 20 ms, as RTP carries it

MENU_FLOW = """
id: menu
start: menu
settings: {no_input_timeout_ms: 8000, max_retries: 0}
nodes:
  menu:
    prompt: {text: "How can I help?"}
    intents: {billing: {route: billing, say: {text: "Billing."}}}
"""


def speech(utterance: str) -> np.ndarray:
    """A callers_dev utterance as 8 kHz int16."""
    audio = read_wav(str(CALLERS_DEV / f"{utterance}.wav"))
    pcm = np.clip(np.asarray(audio.samples, dtype=np.float32) * 32768, -32768, 32767).astype(np.int16)
    return resample_int16(pcm, audio.sample_rate, RATE) if audio.sample_rate != RATE else pcm


class Caller:
    """Sends 20 ms frames to the leg on the real-time clock: what `say` queued, else silence (a phone
    keeps sending while the caller listens)."""

    def __init__(self, leg: ScriptedLeg) -> None:
        self.leg = leg
        self._queued = np.zeros(0, np.int16)
        self._task = asyncio.create_task(self._send())

    def say(self, pcm: np.ndarray) -> None:
        self._queued = np.concatenate([self._queued, pcm])

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while True:
            frame, self._queued = self._queued[:FRAME], self._queued[FRAME:]
            frame = np.concatenate([frame, np.zeros(FRAME - len(frame), np.int16)])
            self.leg.feed(AudioFrame(frame, RATE))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * FRAME / RATE - loop.time()))

    def stop(self) -> None:
        self._task.cancel()


async def prompts_played(leg: ScriptedLeg, prompts: int) -> None:
    """Wait until `prompts` prompts have been played (the caller listens before talking)."""

    async def done() -> bool:
        return len(leg.played) >= prompts and not leg.playing.is_set()

    await poll(done, within=20, interval=0.02)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deps() -> AsyncIterator[CallDeps]:
    recognizer = await asyncio.to_thread(Recognizer, RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    batcher = BatchingRecognizer(recognizer)
    executor = ThreadPoolExecutor(1)
    flow = parse_flow(MENU_FLOW)
    prompts = PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE)))
    await prompts.warm(flow)
    yield CallDeps(
        policy=DialogPolicy(flow),
        contexts=MemoryContextStore(),
        records=MemoryRecordStore(),
        prompts=prompts,
        batcher=batcher,
        vad=await asyncio.to_thread(SileroVad),
        vad_executor=executor,
    )
    await asyncio.to_thread(batcher.close)
    executor.shutdown()


async def utterance_latencies(deps: CallDeps, call_id: str) -> tuple[CallRecord, list[float]]:
    record = await deps.records.get(call_id)
    assert record is not None
    measured = [t.latency_ms for t in record.turns if t.event == "utterance"]
    assert all(ms is not None for ms in measured), record
    return record, [ms for ms in measured if ms is not None]


async def test_recorded_latency_includes_the_silence_wait(deps: CallDeps) -> None:
    # A long end-of-speech silence: measured from the VAD's decision the latency would be the decode
    # time alone, well under it.
    slow = dataclasses.replace(deps, vad_config=VadConfig(min_silence_ms=1500))
    leg, control = ScriptedLeg(), Control()
    session = CallSession("silence-wait", "+15550101", leg, control, slow)
    run = asyncio.create_task(session.run())
    caller = Caller(leg)
    try:
        await prompts_played(leg, 1)
        caller.say(speech("dev003"))  # "why was I charged twice for Zentrix Unlimited this month"
        assert await asyncio.wait_for(run, 30) == "route"
    finally:
        caller.stop()
    record, latencies = await utterance_latencies(deps, "silence-wait")
    assert record.outcome == {"route": "billing"}, record
    assert len(latencies) == 1 and 1500 <= latencies[0] < 1500 + 2500, latencies
