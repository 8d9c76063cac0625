"""Does talking over a prompt stop it, and only when it should? Recorded and synthetic speech,
backchannels ("uh-huh", "okay", "mm-hmm" in several voices), coughs, clicks and line noise, each said
once over the demo flow's opening prompt in a call through the real call path (`bench/harness.py`),
counted per tuning/validation half (`bench/splits.py`).

    nice -n 10 .venv/bin/python -m bench.bargein [--limit N] [--concurrency 4] [--barge-in-ms 96 160]
        [--backchannel-ms 500 700]

Speech should stop the prompt: its stop time runs from the sound's first voiced frame on the wire to
the prompt's last sample sent. Backchannels and noise should not: a false stop is a prompt that did
not play to its end; "paused" counts prompts that went quiet and resumed. "before" is the old rule
(any speech start stops the prompt: `backchannel_ms` 0); the others are `barge_in_ms` and
`backchannel_ms` values.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import numpy as np

from asr_engine.vad import VadConfig
from ivr.calls.session import CallDeps, CallSession
from ivr.media.events import Hangup

from . import phone
from .common import asterisk_clips, pct, table
from .harness import Caller, Control, TimedLeg, call_deps, demo_policy, until
from .splits import HALVES, half_of

SET = "bargein"
PROMPT = "Thanks for calling. In a few words, tell me what you're calling about."
INTO_PROMPT_S = 1.0  # the sound starts this long after the prompt
REQUESTS = [
    "I want to pay my bill",
    "my internet is down again",
    "cancel my account please",
    "can I talk to a person",
    "technical support",
    "I have a question about my bill",
    "sales please",
    "my router keeps restarting",
]
BACKCHANNELS = ["uh-huh", "mm-hmm", "okay", "yeah", "right"]


@dataclass
class Sound:
    key: str
    kind: str  # "speech" (should stop the prompt), "backchannel", "noise" (should not)
    pcm: np.ndarray


def build(seed: int = 5) -> list[Sound]:
    rng = np.random.default_rng(seed)
    out: list[Sound] = []
    allison = [c for c in asterisk_clips() if 1.2 <= len(c.audio.samples) / c.audio.sample_rate <= 3]
    for clip in allison[:8]:
        pcm = phone.trimmed(np.clip(np.asarray(clip.audio.samples) * 32768, -32768, 32767).astype(np.int16))
        out.append(Sound(f"allison-{clip.key}", "speech", phone.telephone(pcm, rng)))
    for i, text in enumerate(REQUESTS):
        voice = phone.VOICES[i % len(phone.VOICES)]
        out.append(Sound(f"voice-{voice}-{text}", "speech", phone.telephone(phone.synthesize(text, voice), rng)))
    for i, word in enumerate(BACKCHANNELS):
        for voice in phone.VOICES[i % 2 :: 2]:
            out.append(
                Sound(f"voice-{voice}-{word}", "backchannel", phone.telephone(phone.synthesize(word, voice), rng))
            )
    for i in range(6):
        seconds = 0.15 + 0.05 * i
        out.append(Sound(f"cough-{seconds:.2f}", "noise", phone.telephone(phone.cough(rng, seconds), rng, 0.6)))
    for i in range(3):
        out.append(Sound(f"clicks-{i}", "noise", phone.clicks(rng, 2 + i)))
        out.append(Sound(f"hiss-{i}", "noise", phone.noise_burst(rng, 0.2 + 0.1 * i)))
    return out


@dataclass
class Outcome:
    stopped: bool  # the prompt did not play to its end
    paused: bool  # it went quiet and resumed
    stop_ms: float | None  # first voiced frame of the sound to the prompt's last sample


async def one_call(deps: CallDeps, sound: Sound, n: int) -> Outcome:
    leg, control = TimedLeg(), Control()
    session = CallSession(f"bargein-{n}", "+15550100", leg, control, deps)
    run = asyncio.create_task(session.run())
    caller = Caller(leg)
    try:
        await until(lambda: bool(leg.plays), 20)
        await asyncio.sleep(max(0.0, leg.plays[0].started + INTO_PROMPT_S - asyncio.get_running_loop().time()))
        caller.say(sound.pcm)
        await caller.said()
        # The opening prompt ends (in full, or stopped and the answer given); then a moment for a resume.
        await until(lambda: len(prompt_starts(control)) > 1 or not leg.playing, 15)
        await asyncio.sleep(1.5)
        await until(lambda: len(prompt_starts(control)) > 1 or not leg.playing, 15)
    finally:
        caller.stop()
        leg.feed(Hangup("bench"))
        await asyncio.wait_for(run, 30)
    starts = prompt_starts(control)
    first = [p for p in leg.plays if len(starts) < 2 or p.started < starts[1]]
    stopped = not first[-1].done
    onset = next((t for t in caller.voiced if t > leg.plays[0].started), None)
    ended = first[-1].ended if stopped else first[0].ended
    stop_ms = (ended - onset) * 1000 if onset is not None and ended is not None and stopped else None
    return Outcome(stopped, len(first) > 1, stop_ms)


def prompt_starts(control: Control) -> list[float]:
    return [t for t, e in control.events if e["type"] == "prompt"]


async def run_config(sounds: list[Sound], config: VadConfig, concurrency: int) -> list[Outcome]:
    policy = demo_policy(PROMPT)
    async with call_deps(policy.flow, config) as deps:
        gate = asyncio.Semaphore(concurrency)

        async def bounded(i: int, sound: Sound) -> Outcome:
            async with gate:
                return await one_call(deps, sound, i)

        return await asyncio.gather(*(bounded(i, s) for i, s in enumerate(sounds)))


def rows(label: str, sounds: list[Sound], outcomes: list[Outcome]) -> list[list[str]]:
    out = []
    for half in HALVES:
        for kind in ("speech", "backchannel", "noise"):
            mine = [o for s, o in zip(sounds, outcomes, strict=True) if s.kind == kind and half_of(SET, s.key) == half]
            stops = [o.stop_ms for o in mine if o.stop_ms is not None]
            out.append(
                [
                    label,
                    half,
                    kind,
                    str(len(mine)),
                    str(sum(o.stopped for o in mine)),
                    str(sum(o.paused and not o.stopped for o in mine)),
                    f"{pct(stops, 50):.0f}" if kind == "speech" else "-",
                    f"{pct(stops, 95):.0f}" if kind == "speech" else "-",
                ]
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N sounds only")
    ap.add_argument("--concurrency", type=int, default=4, help="calls at a time")
    ap.add_argument("--halves", nargs="+", choices=HALVES, default=list(HALVES), help="halves to run")
    ap.add_argument("--before", action=argparse.BooleanOptionalAction, default=True, help="run the old rule too")
    ap.add_argument("--backchannel-ms", type=int, nargs="+", default=[VadConfig().backchannel_ms])
    ap.add_argument("--barge-in-ms", type=int, nargs="+", default=[VadConfig().barge_in_ms])
    ap.add_argument("--verbose", action="store_true", help="every sound's outcome")
    args = ap.parse_args()
    sounds = [s for s in build() if half_of(SET, s.key) in args.halves][: args.limit]
    configs = {
        f"barge_in_ms {on}, backchannel_ms {ms}": VadConfig(barge_in_ms=on, backchannel_ms=ms)
        for on in args.barge_in_ms
        for ms in args.backchannel_ms
    }
    if args.before:
        configs = {"before": VadConfig(backchannel_ms=0), **configs}
    body = []
    for label, config in configs.items():
        t0 = time.monotonic()
        outcomes = asyncio.run(run_config(sounds, config, args.concurrency))
        print(f"{label}: {len(sounds)} calls in {time.monotonic() - t0:.0f} s")
        if args.verbose:
            for s, o in zip(sounds, outcomes, strict=True):
                print(f"  {half_of(SET, s.key):10} {s.kind:11} {s.key:50} {o}")
        body += [r for r in rows(label, sounds, outcomes) if r[3] != "0"]
    headers = ["settings", "half", "sound", "calls", "prompt stopped", "paused, resumed", "stop p50 ms", "stop p95 ms"]
    print(table(headers, body))


if __name__ == "__main__":
    main()
