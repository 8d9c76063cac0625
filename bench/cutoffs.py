"""Does a turn end while the caller is still talking? Utterances with 400-900 ms pauses inside (account
numbers read in groups, hesitations: "I'd like to talk about ... my bill"), through the real call
path (`bench/harness.py`: a call session with the real VAD, tiny.en and the demo flow's main menu or
account-number node), counted per tuning/validation half (`bench/splits.py`).

    nice -n 10 .venv/bin/python -m bench.cutoffs [--limit N] [--concurrency 4]

The set (≥ 40 utterances), built fresh each run with a fixed seed:
- Allison (real recordings): account numbers from `digits/*.wav` in groups, and read prompts whose
  widest gap between words is stretched to the pause;
- caller voices (flite, espeak-ng through the telephone channel of `bench/phone.py`): hesitant
  requests and account numbers in groups.

Per utterance: a cut-off when a transcript was final before the caller's last voiced frame went out
or the one utterance became two turns; a prompt over speech when a prompt started between the
caller's first and last voiced frames; the wait from the last voiced frame to the answer's first
sample. "before" runs the settings that used to be the defaults (no early decode, no hold), "after"
the current defaults. Calls run `--concurrency` at a time on the real-time clock.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from asr_engine.vad import VadConfig
from ivr.calls.session import CallDeps, CallSession
from ivr.media.events import Hangup

from . import phone
from .common import DIGITS, asterisk_clips, pct, table
from .harness import Caller, Control, TimedLeg, call_deps, demo_policy, until
from .splits import HALVES, half_of

SET = "cutoffs"
SHORT_PROMPT = "Yes?"  # each call's opening prompt: the node's own would make every call 10 s longer
MENU, NUMBER = "main_menu", "account_number"
HESITATIONS = [
    ("I'd like to talk about", "my bill"),
    ("I have a question about", "my account"),
    ("I need some help with", "my internet connection"),
    ("um", "billing please"),
    ("I want to", "cancel my service"),
    ("can I speak to", "an agent please"),
    ("my router", "is not working at all"),
    ("I'm calling about", "a charge on my bill"),
    ("uh", "technical support"),
    ("I would like to", "buy a new phone"),
    ("there's a problem with", "my Velmont Fiber"),
    ("I need to update", "my account details"),
]
ALLISON_NUMBERS = [
    ["555", "0138"],
    ["305", "0138"],
    ["42", "7781", "906"],
    ["8675", "309"],
    ["19", "44", "2071"],
    ["600", "112", "48"],
    ["1234", "5678"],
    ["990", "21", "87"],
    ["314", "159", "26"],
    ["2718", "281"],
    ["404", "5050"],
    ["77", "31", "9025"],
]
VOICE_NUMBERS = [["555", "0138"], ["212", "4477"], ["6", "0", "9", "1", "3", "5"], ["880", "1234", "5"]]


@dataclass
class Utterance:
    key: str
    node: str
    pcm: np.ndarray  # 8 kHz int16, through the line
    pauses_ms: list[int]


def _widest_gap(pcm: np.ndarray, floor: int = 300) -> tuple[int, int] | None:
    """The widest stretch between words (20 ms frames below `floor`), not at either end."""
    quiet = np.array([np.abs(pcm[i : i + 160]).max() < floor for i in range(0, len(pcm) - 160, 160)])
    best, start = None, None
    for i, q in enumerate(quiet):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if start > 0 and (best is None or i - start > best[1] - best[0]):
                best = (start, i)
            start = None
    return None if best is None or best[1] - best[0] < 3 else (best[0] * 160, best[1] * 160)


def _stretched_prompts(rng: np.random.Generator, count: int) -> list[Utterance]:
    """Allison's read prompts of 1.5-4 s with their widest gap between words made a 400-900 ms pause."""
    out: list[Utterance] = []
    for clip in asterisk_clips():
        pcm = phone.trimmed(np.clip(np.asarray(clip.audio.samples) * 32768, -32768, 32767).astype(np.int16))
        if not 1.5 <= len(pcm) / phone.RATE <= 4 or (gap := _widest_gap(pcm)) is None:
            continue
        pause = int(rng.uniform(400, 900))
        said = phone.joined([pcm[: gap[0]], pcm[gap[1] :]], [pause / 1000])
        out.append(Utterance(f"allison-{clip.key}", MENU, phone.telephone(said, rng), [pause]))
        if len(out) == count:
            break
    return out


def build(seed: int = 11) -> list[Utterance]:
    rng = np.random.default_rng(seed)

    def pauses(n: int) -> list[int]:
        return [int(rng.uniform(400, 900)) for _ in range(n)]

    out: list[Utterance] = []
    for groups in ALLISON_NUMBERS:
        ms = pauses(len(groups) - 1)
        said = phone.joined([phone.allison_number(g) for g in groups], [p / 1000 for p in ms])
        out.append(Utterance(f"allison-number-{'-'.join(groups)}", NUMBER, phone.telephone(said, rng), ms))
    out += _stretched_prompts(rng, 14)
    for i, parts in enumerate(HESITATIONS):
        voice = phone.VOICES[i % len(phone.VOICES)]
        ms = pauses(1)
        said = phone.joined([phone.synthesize(p, voice) for p in parts], [ms[0] / 1000])
        out.append(Utterance(f"voice-{voice}-{'-'.join(parts)}", MENU, phone.telephone(said, rng), ms))
    for i, groups in enumerate(VOICE_NUMBERS):
        voice = phone.VOICES[(i + 3) % len(phone.VOICES)]
        ms = pauses(len(groups) - 1)
        spoken = [phone.synthesize(" ".join(DIGITS[int(d)] for d in g), voice) for g in groups]
        said = phone.joined(spoken, [p / 1000 for p in ms])
        out.append(Utterance(f"voice-{voice}-number-{'-'.join(groups)}", NUMBER, phone.telephone(said, rng), ms))
    return out


@dataclass
class Outcome:
    key: str
    cut: bool
    over_speech: bool
    wait_ms: float | None


async def one_call(deps: CallDeps, utt: Utterance, n: int) -> Outcome:
    leg, control = TimedLeg(), Control()
    session = CallSession(f"cutoff-{n}", "+15550100", leg, control, deps)
    run = asyncio.create_task(session.run())
    caller = Caller(leg)
    try:
        await until(lambda: leg.plays and leg.plays[0].ended is not None, 20)
        caller.say(np.concatenate([np.zeros(2400, np.int16), utt.pcm]))
        await caller.said()
        last = caller.voiced[-1]
        await until(lambda: len(leg.plays) > 1, 6)
        await asyncio.sleep(0.3)  # a second transcript (the rest of a cut utterance) has its time
    finally:
        caller.stop()
        leg.feed(Hangup("bench"))
        await asyncio.wait_for(run, 30)
    first = next(t for t in caller.voiced if t > leg.plays[0].started)
    transcripts = control.transcripts()
    cut = len(transcripts) > 1 or any(t < last for t, _ in transcripts)
    answers = [p for p in leg.plays[1:] if p.started >= first]
    over = any(first < p.started < last for p in answers)
    wait = (answers[0].started - last) * 1000 if answers and answers[0].started >= last else None
    return Outcome(utt.key, cut, over, wait)


async def run_config(utts: list[Utterance], config: VadConfig, concurrency: int) -> list[Outcome]:
    policies = {node: demo_policy(SHORT_PROMPT, node) for node in (MENU, NUMBER)}
    async with call_deps(policies[MENU].flow, config) as deps:
        await deps.prompts.warm(policies[NUMBER].flow)
        gate = asyncio.Semaphore(concurrency)

        async def bounded(i: int, utt: Utterance) -> Outcome:
            async with gate:
                return await one_call(dataclasses.replace(deps, policy=policies[utt.node]), utt, i)

        return await asyncio.gather(*(bounded(i, u) for i, u in enumerate(utts)))


def rows(label: str, utts: list[Utterance], outcomes: list[Outcome]) -> list[list[str]]:
    out = []
    for half in HALVES:
        mine = [o for u, o in zip(utts, outcomes, strict=True) if half_of(SET, u.key) == half]
        waits = [o.wait_ms for o in mine if o.wait_ms is not None]
        out.append(
            [
                label,
                half,
                str(len(mine)),
                str(sum(o.cut for o in mine)),
                str(sum(o.over_speech for o in mine)),
                f"{pct(waits, 50):.0f}",
                f"{pct(waits, 95):.0f}",
            ]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N utterances only")
    ap.add_argument("--concurrency", type=int, default=4, help="calls at a time")
    ap.add_argument("--only", choices=["before", "after"], default=None, help="one configuration only")
    ap.add_argument("--verbose", action="store_true", help="every utterance's outcome")
    args = ap.parse_args()
    utts = build()[: args.limit]
    configs = {"before": VadConfig(early_end_ms=None, hold_ms=None, backchannel_ms=0), "after": VadConfig()}
    body = []
    for label, config in configs.items():
        if args.only not in (None, label):
            continue
        t0 = time.monotonic()
        outcomes = asyncio.run(run_config(utts, config, args.concurrency))
        print(f"{label}: {len(utts)} calls in {time.monotonic() - t0:.0f} s")
        if args.verbose:
            for u, o in zip(utts, outcomes, strict=True):
                print(f"  {half_of(SET, u.key):10} {u.key:60} pauses {u.pauses_ms} {o}")
        body += rows(label, utts, outcomes)
    headers = ["settings", "half", "utterances", "cut-offs", "prompts over speech", "wait p50 ms", "wait p95 ms"]
    print(table(headers, body))


if __name__ == "__main__":
    main()
