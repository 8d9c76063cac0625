"""How long the caller waits, with a scripted media leg that sends 20 ms frames in real time (the real
VAD, recognizer, dialog and prompts): the recorded turn latency starts at the caller's last voiced audio,
so it includes the endpointing silence; each listen ends the turn after its grammar's pause (a spoken
number is not cut at the breath between digit groups, a yes is answered sooner), and the terminator
key ends a spoken number at once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import numpy as np
import pytest
import pytest_asyncio
from callers import CALLERS_DEV, MODEL_CACHE, PROMPT_CACHE, poll
from test_call_session import Control, ScriptedLeg

from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav
from asr_engine.batcher import BatchingRecognizer
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer, Refine, Transcript, Utterance
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import Endpointer, SileroVad, SpeechEnd, VadConfig
from asr_engine.vad_batch import VadBatcher
from bench.digit_sets import allison
from bench.harness import Caller
from dialog.context import MemoryContextStore
from dialog.flow import parse_flow
from dialog.policy import DialogPolicy
from dialog.records import CallRecord, MemoryRecordStore
from ivr.calls.prompt_cache import PromptCache
from ivr.calls.prompts import PromptConfig, PromptRenderer
from ivr.calls.session import CallDeps, CallSession
from ivr.media.events import DtmfDigit

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

RATE = 8000
FRAME = 160  # 20 ms, as RTP carries it
DEFAULT_END_MS = VadConfig().min_silence_ms  # the service's end of speech: 600 ms

MENU_FLOW = """
id: menu
start: menu
settings: {no_input_timeout_ms: 8000, max_retries: 0}
nodes:
  menu:
    prompt: {text: "How can I help?"}
    intents: {billing: {route: billing, say: {text: "Billing."}}}
"""

DIGITS_FLOW = """
id: digits
start: account
settings: {no_input_timeout_ms: 8000, max_retries: 0}
nodes:
  account:
    prompt: {text: "Your account number?"}
    confirm: {text: "I have {number}. Right?"}
    grammar: digits
    collect: {slot: number, min_length: 7, max_length: 10, next: {route: account, say: {text: "Thanks."}}}
"""


def speech(utterance: str) -> np.ndarray:
    """A callers_dev utterance as 8 kHz int16."""
    audio = read_wav(str(CALLERS_DEV / f"{utterance}.wav"))
    pcm = np.clip(np.asarray(audio.samples, dtype=np.float32) * 32768, -32768, 32767).astype(np.int16)
    return resample_int16(pcm, audio.sample_rate, RATE) if audio.sample_rate != RATE else pcm


def speech_ends(vad: SileroVad, pcm: np.ndarray, end_silence_ms: int) -> list[SpeechEnd]:
    """What the endpointer makes of `pcm` followed by 2 s of silence."""
    endpointer = Endpointer(vad, VadConfig())
    endpointer.set_min_silence(end_silence_ms)
    x = np.concatenate([pcm, np.zeros(2 * RATE, np.int16)]).astype(np.float32) / 32768
    audio = resample_int16((x * 32767).astype(np.int16), RATE, 16000).astype(np.float32) / 32768
    return [e for e in endpointer.accept(audio) if isinstance(e, SpeechEnd)]


async def prompts_played(leg: ScriptedLeg, prompts: int) -> None:
    """Wait until `prompts` prompts have been played (the caller listens before talking)."""

    async def done() -> bool:
        return len(leg.played) >= prompts and not leg.playing.is_set()

    await poll(done, within=20, interval=0.02)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vad() -> SileroVad:
    return await asyncio.to_thread(SileroVad)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deps(vad: SileroVad) -> AsyncIterator[CallDeps]:
    recognizer = await asyncio.to_thread(Recognizer, RecognizerConfig(engine=EngineConfig(cache_dir=MODEL_CACHE)))
    batcher = BatchingRecognizer(recognizer)
    vad_batcher = VadBatcher(vad)
    flow = parse_flow(MENU_FLOW)
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


@pytest.fixture
def decodes(deps: CallDeps, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Loop times at which the session handed an utterance to the recognizer, i.e. when the turn's
    end of speech was decided (the recognizer itself still runs; its time depends on the machine)."""
    times: list[float] = []
    transcribe = deps.recognizer.transcribe

    async def timed(utterance: Utterance, refine: Refine | None = None) -> Transcript:
        times.append(asyncio.get_running_loop().time())
        return await transcribe(utterance, refine)

    monkeypatch.setattr(deps.recognizer, "transcribe", timed)
    return times


async def utterance_latencies(deps: CallDeps, call_id: str) -> tuple[CallRecord, list[float]]:
    record = await deps.records.get(call_id)
    assert record is not None
    measured = [t.latency_ms for t in record.turns if t.event == "utterance"]
    assert all(ms is not None for ms in measured), record
    return record, [ms for ms in measured if ms is not None]


async def test_recorded_latency_includes_the_silence_wait(deps: CallDeps, vad: SileroVad) -> None:
    # A long end-of-speech silence: measured from the VAD's decision the latency would be the decode
    # time alone, well under it.
    # No early end or hold: the turn ends after exactly this silence.
    config = VadConfig(min_silence_ms=1500, early_end_ms=None, hold_ms=None)
    slow = dataclasses.replace(deps, speech_stream=partial(RecognitionStream, vad, config))
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


async def test_a_breath_between_digit_groups_ends_the_turn_only_at_the_default_pause(vad: SileroVad) -> None:
    number = allison(["305", "0138"])
    assert len(speech_ends(vad, number, DEFAULT_END_MS)) == 2  # cut after "305"
    (whole,) = speech_ends(vad, number, 1200)
    assert whole.end - whole.start > len(number) / RATE - 0.2


async def test_yes_ends_sooner_at_the_yes_no_pause(vad: SileroVad) -> None:
    yes = speech("dev041")  # "yes that's right"
    (default,) = speech_ends(vad, yes, DEFAULT_END_MS)
    (short,) = speech_ends(vad, yes, 300)
    assert short.voiced_end == default.voiced_end
    assert default.decided_at - short.decided_at >= 0.25
    assert short.decided_at - short.voiced_end < DEFAULT_END_MS / 1000


async def digits_call(
    deps: CallDeps, flow_text: str, call_id: str, answer: Callable[[ScriptedLeg, Caller], Awaitable[float]]
) -> tuple[CallRecord, Control, float, float]:
    """A call at a digits node: after its prompt the caller reads "305 ‖ 0138", then `answer` goes on
    (the loop time it returns is its own mark). The record, the control, when the number was said
    and the mark."""
    flow = parse_flow(flow_text)
    digits_deps = dataclasses.replace(deps, policy=DialogPolicy(flow))
    await deps.prompts.warm(flow)
    leg, control = ScriptedLeg(), Control()
    run = asyncio.create_task(CallSession(call_id, "+15550102", leg, control, digits_deps).run())
    caller = Caller(leg)
    try:
        await prompts_played(leg, 1)
        caller.say(allison(["305", "0138"]))
        number_said = await caller.said()
        mark = await answer(leg, caller)
        assert await asyncio.wait_for(run, 40) == "route"
    finally:
        caller.stop()
    record, _ = await utterance_latencies(deps, call_id)
    assert record.outcome == {"route": "account"}, record  # cut after "305" it would escalate
    return record, control, number_said, mark


def confirmed_number(control: Control) -> str:
    return [e["text"] for e in control.events if e["type"] == "prompt"][1]


async def test_digits_node_keeps_the_number_whole_and_yes_is_answered_sooner(
    deps: CallDeps, decodes: list[float]
) -> None:
    async def say_yes(leg: ScriptedLeg, caller: Caller) -> float:
        await prompts_played(leg, 2)  # "I have 3 0 5 0 1 3 8. Right?"
        caller.say(speech("dev041"))
        return await caller.said()

    record, control, number_said, yes_said = await digits_call(deps, DIGITS_FLOW, "digits-breath", say_yes)
    assert "3 0 5 0 1 3 8" in confirmed_number(control)
    _, (number_ms, _) = await utterance_latencies(deps, "digits-breath")
    assert number_ms >= 1200, record  # the caller waited out the digits node's pause
    # The number, 7 of up to 10 digits, was decoded at its pauses (the breath, the gaps between digits,
    # after its last digit): not complete, so the turn waited for its 1.2 s and reused the last decode.
    *number, yes = decodes
    assert len(number) >= 2 and number[-1] - number_said < 1.0, (number_said, decodes)
    # The yes was decided at the early pause, sooner than the usual 600 ms.
    assert yes - yes_said < DEFAULT_END_MS / 1000, yes - yes_said


async def test_terminator_key_ends_a_spoken_number_at_once(deps: CallDeps, decodes: list[float]) -> None:
    async def press_pound(leg: ScriptedLeg, caller: Caller) -> float:
        await asyncio.sleep(0.1)
        leg.feed(DtmfDigit("#", "rfc4733"))
        return asyncio.get_running_loop().time()

    # No confirm prompt: its text (with the number) would be synthesized while the caller waits.
    flow = DIGITS_FLOW.replace('    confirm: {text: "I have {number}. Right?"}\n', "")
    record, _, _, keyed = await digits_call(deps, flow, "digits-pound", press_pound)
    assert [t.event for t in record.turns] == ["call_started", "utterance"], record  # the key was no entry
    # The key, not the digits node's 1.2 s of silence, ended the turn.
    assert decodes[-1] - keyed < 0.5, decodes[-1] - keyed


async def test_a_number_with_all_its_digits_ends_at_the_short_pause(deps: CallDeps, decodes: list[float]) -> None:
    async def confirm_by_key(leg: ScriptedLeg, caller: Caller) -> float:
        await prompts_played(leg, 2)
        leg.feed(DtmfDigit("1", "rfc4733"))  # the confirm prompt's yes key
        return asyncio.get_running_loop().time()

    flow = DIGITS_FLOW.replace("max_length: 10", "max_length: 7")
    _, control, said, _ = await digits_call(deps, flow, "digits-complete", confirm_by_key)
    assert "3 0 5 0 1 3 8" in confirmed_number(control)
    # Decoded at each pause (the breath after "305" and the gaps between digits: go on) and at the early
    # pause after the last digit (7: complete); that decode is the turn's, none follows at the digits
    # node's own 1.2 s.
    assert len(decodes) >= 2 and decodes[-1] - said < 0.9, (said, decodes)


EARLY_FLOW = """
id: early
start: menu
settings: {no_input_timeout_ms: 8000, max_retries: 0}
nodes:
  menu:
    prompt: {text: "How can I help?"}
    end_silence_ms: 3000
    intents: {billing: {route: billing, say: {text: "Billing."}}}
"""


@pytest.mark.parametrize(
    ("utterance", "outcome", "early"),
    [("dev003", {"route": "billing"}, True), ("dev041", {"route": "agent"}, False)],
)
async def test_a_turn_the_dialog_acts_on_ends_at_the_early_pause(
    deps: CallDeps, vad: SileroVad, decodes: list[float], utterance: str, outcome: dict[str, str], early: bool
) -> None:
    # A 3 s end silence so that an early end cannot be mistaken for the silence running out.
    flow = parse_flow(EARLY_FLOW)
    stream = partial(RecognitionStream, vad, VadConfig(early_end_ms=400))
    early_deps = dataclasses.replace(deps, policy=DialogPolicy(flow), speech_stream=stream)
    await deps.prompts.warm(flow)
    leg, control = ScriptedLeg(), Control()
    call_id = f"early-{utterance}"
    session = CallSession(call_id, "+15550105", leg, control, early_deps)
    run = asyncio.create_task(session.run())
    caller = Caller(leg)
    try:
        await prompts_played(leg, 1)
        caller.say(speech(utterance))  # billing; "yes that's right" is no answer to the menu
        assert await asyncio.wait_for(run, 30) == "route"
    finally:
        caller.stop()
    record, (latency_ms,) = await utterance_latencies(deps, call_id)
    assert record.outcome == outcome, record
    assert len(decodes) == 1, decodes  # decoded at the pause; the turn's end reused it
    if early:
        assert latency_ms < 3000, record
    else:
        assert latency_ms >= 3000, record
