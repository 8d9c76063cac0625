"""The call session's own rules, with a scripted media leg (the real VAD, recognizer, dialog and
prompts): a key stops a prompt and routes, silence re-prompts then escalates, a hang-up mid-prompt ends
everything and is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from callers import MODEL_CACHE, PROMPT_CACHE

from asr_engine.batcher import BatchingRecognizer
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import SileroVad, SpeechEnd, VadConfig
from asr_engine.vad_batch import VadBatcher
from dialog.context import MemoryContextStore
from dialog.flow import parse_flow
from dialog.policy import DialogPolicy
from dialog.records import MemoryRecordStore
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer
from ivr.calls.session import BARGE_INS, CallDeps, CallSession, Transport
from ivr.media.events import DtmfDigit, Hangup, MediaEvent

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

FLOW = """
id: unit
start: menu
settings:
  no_input_timeout_ms: 500
  max_retries: 1
  escalation: {route: agent}
  escalation_prompt: {text: "Connecting you."}
  no_input: {text: "Still there?"}
nodes:
  menu:
    prompt: {text: "Press one for billing, or two for support."}
    grammar: free
    dtmf:
      "1": {route: billing, say: {text: "Billing."}}
      "2": {route: tech_support}
"""


class ScriptedLeg:
    """Media as the test scripts it: `recv` yields what `feed` put in; `play` lasts as long as the audio
    (in real time) unless `stop_playback` cuts it."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._stop: asyncio.Event | None = None
        self.played: list[bool] = []  # per prompt: played to the end
        self.playing = asyncio.Event()

    def feed(self, event: MediaEvent) -> None:
        self._events.put_nowait(event)

    async def recv(self) -> MediaEvent:
        return await self._events.get()

    async def play(self, pcm: np.ndarray, sample_rate: int) -> bool:
        self._stop = asyncio.Event()
        self.playing.set()
        try:
            await asyncio.wait_for(self._stop.wait(), len(pcm) / sample_rate)
            done = False
        except TimeoutError:
            done = True
        self.playing.clear()
        self.played.append(done)
        return done

    def stop_playback(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def close(self, reason: str) -> None:
        self.feed(Hangup(reason))


class Control:
    transport: Transport = "webrtc"

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.events: list[dict[str, Any]] = []

    async def route(self, queue: str) -> None:
        self.done.append(("route", queue))

    async def transfer(self, uri: str) -> None:
        self.done.append(("transfer", uri))

    async def hangup(self, reason: str) -> None:
        self.done.append(("hangup", reason))

    def notify(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deps(vad: SileroVad) -> AsyncIterator[CallDeps]:
    recognizer = await asyncio.to_thread(Recognizer, RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    batcher = BatchingRecognizer(recognizer)
    vad_batcher = VadBatcher(vad)
    flow = parse_flow(FLOW)
    prompts = PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE)))
    await prompts.warm(flow)
    yield CallDeps(
        policy=DialogPolicy(flow),
        contexts=MemoryContextStore(),
        records=MemoryRecordStore(),
        prompts=prompts,
        recognizer=batcher,
        speech_stream=partial(RecognitionStream, vad, VadConfig()),
        vad=vad_batcher,
    )
    await asyncio.to_thread(batcher.close)
    vad_batcher.close()


async def test_key_stops_the_prompt_and_routes(deps: CallDeps) -> None:
    leg, control = ScriptedLeg(), Control()
    session = CallSession("key", "+15550001", leg, control, deps)
    before = BARGE_INS.labels("webrtc", "dtmf")._value.get()
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(leg.playing.wait(), 5)
    leg.feed(DtmfDigit("1", "datachannel"))
    assert await asyncio.wait_for(run, 10) == "route"
    assert leg.played == [False, True]  # the welcome prompt cut short, then "Billing." in full
    assert control.done == [("route", "billing")]
    assert BARGE_INS.labels("webrtc", "dtmf")._value.get() == before + 1
    assert {"type": "route", "queue": "billing"} in control.events
    assert control.events[0]["type"] == "prompt" and control.events[0]["text"].startswith("Press one")
    record = await deps.records.get("key")
    assert record is not None and record.outcome == {"route": "billing"}
    assert [t.event for t in record.turns] == ["call_started", "dtmf"]


async def test_silence_reprompts_then_escalates(deps: CallDeps) -> None:
    leg, control = ScriptedLeg(), Control()
    session = CallSession("silent", "+15550002", leg, control, deps)
    assert await asyncio.wait_for(session.run(), 30) == "route"
    assert control.done == [("route", "agent")]
    prompts = [e["text"] for e in control.events if e["type"] == "prompt"]
    assert prompts[0].startswith("Press one") and "Still there?" in prompts and prompts[-1] == "Connecting you."
    assert all(leg.played) and len(leg.played) == len(prompts)
    record = await deps.records.get("silent")
    assert record is not None
    assert [t.event for t in record.turns] == ["call_started", "no_input", "no_input"]


async def test_hangup_during_a_prompt_ends_the_call(deps: CallDeps) -> None:
    leg, control = ScriptedLeg(), Control()
    session = CallSession("gone", "+15550003", leg, control, deps)
    run = asyncio.create_task(session.run())
    await asyncio.wait_for(leg.playing.wait(), 5)
    leg.feed(Hangup("bye"))
    assert await asyncio.wait_for(run, 5) == "abandoned"
    assert leg.played == [False] and control.done == []
    record = await deps.records.get("gone")
    assert record is not None and record.outcome == {"hangup": "bye"}


class _Unheard:
    """A caller who only presses keys: no utterance is ever cut, so nothing may reach a recognizer."""

    in_speech = False
    voiced_end = 0.0  # nothing ever voiced: a prompt never waits for the caller to finish
    onset_voiced = 0.0

    def __init__(self) -> None:
        self.contexts: list[tuple[object, str]] = []

    def feed(self, sample_rate: int, samples: np.ndarray) -> None:
        raise AssertionError("a DTMF-only call carries no audio")

    def set_context(self, biaser: object, prompt: str = "") -> None:
        self.contexts.append((biaser, prompt))

    def take_utterances(self) -> list[tuple[SpeechEnd, object]]:
        return []


class _NoRecognizer:
    async def transcribe(self, utterance: object, refine: object = None) -> object:
        raise AssertionError("a DTMF-only call has nothing to transcribe")


async def test_a_dtmf_only_call_routes_with_no_model_loaded(vad: SileroVad, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    from asr_engine import recognizer as recognizer_module

    created: list[str] = []
    for cls in (onnxruntime.InferenceSession, recognizer_module.Recognizer):
        init = cls.__init__

        def counting(self: Any, *args: Any, _init: Any = init, _name: str = cls.__name__, **kw: Any) -> None:
            created.append(_name)
            _init(self, *args, **kw)

        monkeypatch.setattr(cls, "__init__", counting)

    flow = parse_flow(FLOW)
    prompts = PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE)))
    stream = _Unheard()
    vad_batcher = VadBatcher(vad)  # the service's, loaded before any call
    deps = CallDeps(
        policy=DialogPolicy(flow),
        contexts=MemoryContextStore(),
        records=MemoryRecordStore(),
        prompts=prompts,
        recognizer=_NoRecognizer(),
        speech_stream=lambda: stream,
        vad=vad_batcher,
    )
    leg, control = ScriptedLeg(), Control()
    run = asyncio.create_task(CallSession("keys", "+15550004", leg, control, deps).run())
    await asyncio.wait_for(leg.playing.wait(), 10)
    leg.feed(DtmfDigit("2", "rfc4733"))
    assert await asyncio.wait_for(run, 10) == "route"
    vad_batcher.close()
    assert control.done == [("route", "tech_support")]
    assert stream.contexts == [(None, "")]  # it listened (free grammar), with no hot words
    record = await deps.records.get("keys")
    assert record is not None and record.outcome == {"route": "tech_support"}
    assert created == []  # no recognizer, no ONNX Runtime session (the VAD's included)


ENTRY_FLOW = """
id: entry
start: account
settings: {no_input_timeout_ms: 20000, digit_timeout_ms: 500, max_retries: 0}
nodes:
  account:
    prompt: {text: "Your account number?"}
    grammar: digits
    collect: {slot: number, min_length: 4, max_length: 8, terminator: "#", next: {route: account}}
"""


async def test_a_number_keyed_without_its_terminator_ends_at_the_inter_digit_timeout(vad) -> None:
    flow = parse_flow(ENTRY_FLOW)
    vad_batcher = VadBatcher(vad)
    deps = CallDeps(
        policy=DialogPolicy(flow),
        contexts=MemoryContextStore(),
        records=MemoryRecordStore(),
        prompts=PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE))),
        recognizer=_NoRecognizer(),
        speech_stream=_Unheard,
        vad=vad_batcher,
    )
    leg, control = ScriptedLeg(), Control()
    run = asyncio.create_task(CallSession("entry", "+15550005", leg, control, deps).run())
    await asyncio.wait_for(leg.playing.wait(), 10)
    for key in "47192":
        leg.feed(DtmfDigit(key, "rfc4733"))
    # The node's 500 ms between digits, not its 20 s of no input, ends the entry.
    assert await asyncio.wait_for(run, 10) == "route"
    vad_batcher.close()
    record = await deps.records.get("entry")
    assert record is not None and record.outcome == {"route": "account"}
    assert [t.event for t in record.turns][-1] == "no_input"
