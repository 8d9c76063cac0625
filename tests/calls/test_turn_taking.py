"""Turn-taking on the real call path (the real VAD, recognizer, dialog and prompts; a caller sending
20 ms frames in real time): a turn that trails off is held open through the caller's pause, no
answer starts while the caller is talking, and talking over a prompt stops it only when it is more
than a backchannel or a cough."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from functools import partial

import numpy as np
import pytest
import pytest_asyncio

from asr_engine.streaming import RecognitionStream
from asr_engine.vad import SileroVad, VadConfig
from bench import phone
from bench.harness import Caller, Control, TimedLeg, call_deps, demo_policy, until
from ivr.calls.session import BARGE_INS, CallDeps, CallSession
from ivr.media.events import Hangup

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

MENU_PROMPT = "How can I help?"
LONG_PROMPT = "Thanks for calling. In a few words, tell me what you're calling about. You can also press a key."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deps() -> AsyncIterator[CallDeps]:
    async with call_deps(demo_policy(MENU_PROMPT).flow, VadConfig()) as shared:
        await shared.prompts.warm(demo_policy(LONG_PROMPT).flow)
        yield shared


def with_vad(deps: CallDeps, prompt: str, **vad: int | None) -> CallDeps:
    stream = deps.speech_stream
    assert isinstance(stream, partial)
    vad_model: SileroVad = stream.args[0]
    return dataclasses.replace(
        deps, policy=demo_policy(prompt), speech_stream=partial(RecognitionStream, vad_model, VadConfig(**vad))
    )


def voice(*parts: str, pauses_s: tuple[float, ...] = (), seed: int = 3) -> np.ndarray:
    """A caller's voice through the phone line, with these pauses between the parts."""
    said = phone.joined([phone.synthesize(p, "flite:slt") for p in parts], list(pauses_s))
    return phone.telephone(said, np.random.default_rng(seed))


async def call(
    deps: CallDeps, call_id: str, audio: np.ndarray, after_prompt: bool = True
) -> tuple[TimedLeg, Control, Caller]:
    """One call: the caller says `audio` after the opening prompt (or 1 s into it); it ends when the
    dialog does, or once no prompt plays 2.5 s after the caller's last word."""
    leg, control = TimedLeg(), Control()
    run = asyncio.create_task(CallSession(call_id, "+15550199", leg, control, deps).run())
    caller = Caller(leg)
    try:
        if after_prompt:
            await until(lambda: bool(leg.plays) and leg.plays[0].ended is not None, 20)
        else:
            await until(lambda: bool(leg.plays), 20)
            await asyncio.sleep(1.0)
        caller.say(audio)
        await caller.said()
        await asyncio.sleep(2.5)
        await until(lambda: run.done() or not leg.playing, 10)
        await until(run.done, 0.5)
    finally:
        caller.stop()
        leg.feed(Hangup("test"))
        await asyncio.wait_for(run, 30)
    return leg, control, caller


@pytest.mark.parametrize("hold_ms", [1100, None])
async def test_a_request_that_trails_off_is_held_through_the_pause(deps: CallDeps, hold_ms: int | None) -> None:
    audio = voice("I'd like to talk about", "my bill", pauses_s=(0.8,))
    _, control, _ = await call(with_vad(deps, MENU_PROMPT, hold_ms=hold_ms), f"hold-{hold_ms}", audio)
    transcripts = [text for _, text in control.transcripts()]
    if hold_ms:
        # "... about" is no request: the turn waits past the 600 ms end of speech for the rest.
        assert len(transcripts) == 1, transcripts
    else:
        assert len(transcripts) == 2, transcripts  # without the hold, the pause cut it in two


@pytest.mark.parametrize("pause_s", [0.3, 0.45])
async def test_no_answer_starts_while_the_caller_goes_on(deps: CallDeps, pause_s: float) -> None:
    # "Billing" is a request the menu acts on at the early pause: whether its decode or the caller's
    # next words come first, the answer must not talk over them.
    audio = voice("billing", "and also my router is broken", pauses_s=(pause_s,))
    leg, _, caller = await call(with_vad(deps, MENU_PROMPT), f"goes-on-{pause_s}", audio)
    first = next(t for t in caller.voiced if t > leg.plays[0].ended)  # type: ignore[operator]
    over = [p.started for p in leg.plays[1:] if first < p.started < caller.voiced[-1]]
    assert not over, (first, caller.voiced[-1], over)


Sound = Callable[[], np.ndarray]


def barge_ins() -> float:
    return BARGE_INS.labels("webrtc", "speech")._value.get()


@pytest.mark.parametrize(
    "sound",
    [
        pytest.param(lambda: voice("uh-huh"), id="uh-huh"),
        pytest.param(lambda: voice("okay"), id="okay"),
        pytest.param(
            lambda: phone.telephone(phone.cough(np.random.default_rng(1), 0.3), np.random.default_rng(2)), id="cough"
        ),
    ],
)
async def test_a_backchannel_or_a_cough_does_not_stop_the_prompt(deps: CallDeps, sound: Sound) -> None:
    before = barge_ins()
    leg, _, _ = await call(with_vad(deps, LONG_PROMPT), "backchannel", sound(), after_prompt=False)
    assert barge_ins() == before
    # The prompt played to its end (maybe in two pieces, paused while the caller spoke).
    opening = [p for p in leg.plays if p.started < leg.plays[0].started + leg.plays[0].seconds + 2]
    assert opening[-1].done, leg.plays


async def test_speech_over_a_prompt_stops_it_at_once(deps: CallDeps) -> None:
    before = barge_ins()
    leg, control, caller = await call(
        with_vad(deps, LONG_PROMPT), "barge-in", voice("I want to pay my bill"), after_prompt=False
    )
    assert barge_ins() == before + 1
    assert not leg.plays[0].done
    onset = next(t for t in caller.voiced if t > leg.plays[0].started)
    assert leg.plays[0].ended is not None
    # 300 ms on a quiet machine (bench/bargein.py); generous here, where other work shares the CPU.
    assert leg.plays[0].ended - onset < 1.0, leg.plays[0].ended - onset
    # The words that stopped it are the caller's turn: the menu routes on them.
    assert len(control.transcripts()) == 1 and [d[0] for d in control.done] == ["route"], control.transcripts()
