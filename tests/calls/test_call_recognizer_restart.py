"""A caller whose utterance takes the recognizer's worker down (a crash outside a decode, or a decode
that hangs past the watchdog) hears the node's no-match re-prompt, not silence or a hang-up, and can go
on: the key pressed after it routes the call. The real batcher, dialog and prompts; a scripted VAD."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable, Sequence

import numpy as np
import pytest
from callers import PROMPT_CACHE, poll
from test_call_session import Control, ScriptedLeg

from asr_engine.batcher import BatchingRecognizer
from asr_engine.metrics import ASR_WORKER_RESTARTS
from asr_engine.recognizer import Transcript, Utterance
from asr_engine.vad import SileroVad, SpeechEnd, VadConfig, VadEvent, VadState
from asr_engine.vad_batch import VadBatcher
from dialog.context import MemoryContextStore
from dialog.flow import parse_flow
from dialog.policy import DialogPolicy
from dialog.records import MemoryRecordStore
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer
from ivr.calls.session import UTTERANCES_DROPPED, CallDeps, CallSession
from ivr.media.events import AudioFrame, DtmfDigit

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

REPROMPT = "Sorry, I didn't catch that. Press one for billing."
FLOW = f"""
id: restart
start: menu
settings:
  no_input_timeout_ms: 8000
  max_retries: 2
  escalation: {{route: agent}}
nodes:
  menu:
    prompt: {{text: "Tell me why you are calling, or press one for billing."}}
    no_match: {{text: "{REPROMPT}"}}
    grammar: free
    intents:
      billing: {{route: billing}}
    dtmf:
      "1": {{route: billing, say: {{text: "Billing."}}}}
"""


class OneUtterance:
    """A VAD that hears one utterance in the first audio it is given, and nothing after."""

    in_speech = False
    config = VadConfig()
    voiced_end = 0.0
    onset_voiced = 0.0

    def __init__(self) -> None:
        self._pending: list[tuple[SpeechEnd, Utterance]] = []
        self._heard = False
        self._judged = True

    def feed(self, sample_rate: int, samples: np.ndarray) -> None:
        self._judged = self._heard  # one chunk to judge, the first time only
        self._heard = True

    def next_chunk(self) -> tuple[VadState, np.ndarray] | None:
        return None if self._judged else (VadState(), np.zeros(512, np.float32))

    def judge(self, p: float) -> list[VadEvent]:
        self._judged = True
        x = np.zeros(16000, np.float32)
        end = SpeechEnd(0.0, 1.0, x, False, voiced_end=1.0, decided_at=1.6)
        self._pending.append((end, Utterance(x, 16000)))
        return [end]

    def set_context(self, biaser: object, prompt: str = "") -> None:
        """No hot words: the recognizer behind this stream fails before it would use them."""

    def take_utterances(self) -> list[tuple[SpeechEnd, Utterance]]:
        out, self._pending = self._pending, []
        return out

    def set_end_silence(self, ms: int, pause_ms: int | None = None) -> None:
        """The one utterance ends where it ends: no silence is waited for."""

    def utterance(self, samples: np.ndarray) -> Utterance:
        return Utterance(samples, 16000)

    def input_finished(self) -> list[VadEvent]:
        return []


class BrokenRecognizer:
    """'crashed': a decoder step hands back a transcript for no utterance it was given (a bug the
    worker cannot survive); 'hung': taking an utterance in blocks until released."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.release = threading.Event()

    def start(self) -> BrokenRecognition:
        return BrokenRecognition(self)


class BrokenRecognition:
    def __init__(self, rec: BrokenRecognizer) -> None:
        self.rec = rec
        self.keys: list[Hashable] = []

    def __len__(self) -> int:
        return len(self.keys)

    def admit(self, items: Sequence[tuple[Hashable, Utterance]]) -> None:
        if self.rec.how == "hung":
            self.rec.release.wait(20)
        self.keys += [k for k, _ in items]

    def step(self) -> list[tuple[Hashable, Transcript]]:
        self.keys.clear()
        return [("nobody", Transcript("", [], 0.0, 0.0, 0.0, 0.0))]

    def cancel(self, key: Hashable) -> None:
        self.keys.remove(key)


@pytest.mark.parametrize("how", ["crashed", "hung"])
async def test_worker_failure_reprompts_and_the_call_goes_on(how: str, vad: SileroVad) -> None:
    broken = BrokenRecognizer(how)
    batcher = BatchingRecognizer(broken, worker_timeout_s=0.5)  # type: ignore[arg-type]
    flow = parse_flow(FLOW)
    prompts = PromptCache(PromptRenderer(PromptConfig(cache_dir=PROMPT_CACHE)))
    await prompts.warm(flow)
    vad_batcher = VadBatcher(vad)
    deps = CallDeps(
        policy=DialogPolicy(flow),
        contexts=MemoryContextStore(),
        records=MemoryRecordStore(),
        prompts=prompts,
        recognizer=batcher,
        speech_stream=OneUtterance,
        vad=vad_batcher,
    )
    restarts = ASR_WORKER_RESTARTS.labels(how)._value.get()
    dropped = UTTERANCES_DROPPED.labels("worker-restart")._value.get()
    leg, control = ScriptedLeg(), Control()
    run = asyncio.create_task(CallSession(how, "+15550009", leg, control, deps).run())
    try:
        await asyncio.wait_for(leg.playing.wait(), 10)
        leg.feed(AudioFrame(np.zeros(160, np.int16), 8000))  # the caller talks over the menu

        async def reprompted() -> bool:
            return any(e.get("text") == REPROMPT for e in control.events)

        await poll(reprompted, 10, 0.05)
        leg.feed(DtmfDigit("1", "rfc4733"))
        assert await asyncio.wait_for(run, 10) == "route"
    finally:
        broken.release.set()
        await asyncio.to_thread(batcher.close)
        vad_batcher.close()
    assert control.done == [("route", "billing")]
    prompts_said = [e["text"] for e in control.events if e["type"] == "prompt"]
    assert prompts_said[1:] == [REPROMPT, "Billing."], prompts_said
    assert ASR_WORKER_RESTARTS.labels(how)._value.get() == restarts + 1
    assert UTTERANCES_DROPPED.labels("worker-restart")._value.get() == dropped + 1
    record = await deps.records.get(how)
    assert record is not None and record.outcome == {"route": "billing"}
    assert [t.event for t in record.turns] == ["call_started", "utterance", "dtmf"]
