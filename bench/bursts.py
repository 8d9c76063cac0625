"""Bursts benchmark: callers' waits under the recognizer's two schedules, in one process, same load.

    .venv/bin/python -m bench.bursts [--burst 16] [--uploads 2] [--upload-s 60] [--calls-during 3]
                                     [--max-batch 8] [--threads 2] [--schedules whole,continuous]

`whole` is the schedule the batcher had before continuous batching, rebuilt here as the baseline: the
worker takes up to max batch waiting callers' utterances (waiting max wait for the batch to fill),
decodes them to the end of the longest, then looks at its queue again; upload chunks one at a time
when no caller waits. `continuous` is `BatchingRecognizer`: callers join between decoder steps, each
transcript leaves when its own row ends, and upload chunks pause while callers are decoded.

Two scenarios, each run under both schedules one after the other on the same recognizer (tiny.en,
int8, from .cache/test-models or VOICENAV_TEST_CACHE):
- burst: `--burst` callers_dev utterances (validation half) submitted within 50 ms;
- uploads: `--uploads` recordings of about `--upload-s` seconds (Asterisk prompts, validation half,
  end to end with 1 s pauses, cut into chunks by the file segmenter) posted together, and
  `--calls-during` callers' utterances submitted one after another (each 1 s after the previous
  answer) while they decode.
Latency is from an utterance's submission to its transcript. Timings move with the machine's load:
compare the two schedules within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from asr_engine.audio.resample import resample
from asr_engine.batcher import BatchingRecognizer, Priority
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer, Transcript, Utterance
from asr_engine.segmenter import speech_chunks
from asr_engine.transcribe import utterances
from asr_engine.vad import RATE, SileroVad

from .common import ROOT, asterisk_clips, caller_clips, pct, table
from .splits import split

BURST_SPREAD_S = 0.05


class WholeBatches:
    """The baseline schedule: whole batches decoded to their end (see the module's docstring)."""

    def __init__(self, recognizer: Recognizer, max_batch: int, max_wait_ms: float) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._ready = threading.Condition()
        self._calls: deque[tuple[Utterance, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self._uploads: deque[tuple[Utterance, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    async def transcribe_all(
        self, utts: list[Utterance], refine: None = None, priority: Priority = Priority.CALL
    ) -> list[Transcript]:
        loop = asyncio.get_running_loop()
        jobs = [(u, loop.create_future(), loop) for u in utts]
        with self._ready:
            (self._calls if priority is Priority.CALL else self._uploads).extend(jobs)
            self._ready.notify()
        return list(await asyncio.gather(*(f for _, f, _ in jobs)))

    async def transcribe(self, utt: Utterance) -> Transcript:
        return (await self.transcribe_all([utt]))[0]

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._calls and not self._uploads and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                if self._calls:
                    deadline = time.perf_counter() + self.max_wait
                    while len(self._calls) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                        self._ready.wait(left)
                    batch = [self._calls.popleft() for _ in range(min(self.max_batch, len(self._calls)))]
                else:
                    batch = [self._uploads.popleft()]
            results = self.recognizer.recognize([u for u, _, _ in batch])
            for (_, fut, loop), r in zip(batch, results, strict=True):
                loop.call_soon_threadsafe(fut.set_result, r)

    def close(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join(30)


def schedule(name: str, recognizer: Recognizer, max_batch: int, max_wait_ms: float):
    if name == "whole":
        return WholeBatches(recognizer, max_batch, max_wait_ms)
    return BatchingRecognizer(recognizer, max_batch=max_batch, max_wait_ms=max_wait_ms, upload_queue_size=64)


async def timed(coro) -> float:
    t0 = time.perf_counter()
    await coro
    return time.perf_counter() - t0


async def burst(sched, utts: list[Utterance]) -> list[float]:
    """Every utterance submitted within BURST_SPREAD_S; each one's wait for its transcript."""

    async def one(i: int, u: Utterance) -> float:
        await asyncio.sleep(BURST_SPREAD_S * i / max(1, len(utts) - 1))
        return await timed(sched.transcribe(u))

    return list(await asyncio.gather(*(one(i, u) for i, u in enumerate(utts))))


async def during_uploads(sched, recordings: list[list[Utterance]], calls: list[Utterance]) -> tuple[list[float], float]:
    """Callers' waits while the recordings decode (one caller at a time, 1 s apart), and how long the
    recordings took."""
    t0 = time.perf_counter()
    uploads = asyncio.gather(*(sched.transcribe_all(r, None, Priority.UPLOAD) for r in recordings))
    waits = []
    for u in calls:
        await asyncio.sleep(1.0)
        waits.append(await timed(sched.transcribe(u)))
    await uploads
    return waits, time.perf_counter() - t0


def recordings(n: int, seconds: float, vad: SileroVad) -> list[list[Utterance]]:
    """`n` recordings of about `seconds` each from Asterisk prompts (validation half), as the file
    segmenter cuts them into chunks."""
    prompts = sorted(split(asterisk_clips())["validation"], key=lambda c: -c.audio.seconds)
    pause = np.zeros(RATE, np.float32)
    out = []
    for i in range(n):
        pieces: list[np.ndarray] = []
        for c in prompts[i::n]:
            if sum(len(p) for p in pieces) >= seconds * RATE:
                break
            pieces += [resample(np.asarray(c.audio.samples, np.float32), c.audio.sample_rate, RATE), pause]
        audio = np.concatenate(pieces).astype(np.float32)
        out.append(utterances(speech_chunks(audio, RATE, vad), None))
    return out


def row(name: str, scenario: str, waits: list[float], extra: str = "") -> list:
    return [name, scenario, len(waits), f"{pct(waits, 50):.2f}", f"{pct(waits, 95):.2f}", f"{max(waits):.2f}", extra]


async def run(args: argparse.Namespace) -> None:
    cache = Path(os.environ.get("VOICENAV_TEST_CACHE", ROOT / ".cache" / "test-models"))
    cfg = RecognizerConfig(engine=EngineConfig(cache_dir=cache, intra_op_threads=args.threads))
    rec = Recognizer(cfg)
    rec.warmup()
    callers = [Utterance(c.audio.samples, c.audio.sample_rate) for c in split(caller_clips())["validation"]]
    burst_utts = [callers[i % len(callers)] for i in range(args.burst)]
    during = callers[-args.calls_during :] if args.calls_during else []
    recs = recordings(args.uploads, args.upload_s, SileroVad()) if args.uploads else []
    chunks = [len(r) for r in recs]
    rows = []
    for name in args.schedules.split(","):
        sched = schedule(name, rec, args.max_batch, args.max_wait_ms)
        try:
            if burst_utts:
                rows.append(row(name, f"burst of {len(burst_utts)}", await burst(sched, burst_utts)))
            if recs and during:
                waits, took = await during_uploads(sched, recs, during)
                rows.append(row(name, f"calls during {len(recs)} uploads ({sum(chunks)} chunks)", waits, f"{took:.1f}"))
        finally:
            sched.close()
    print(table(["schedule", "scenario", "n", "p50 s", "p95 s", "max s", "uploads took s"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--burst", type=int, default=16, help="utterances submitted within 50 ms (0: no burst)")
    ap.add_argument("--uploads", type=int, default=2, help="recordings decoded while callers speak (0: none)")
    ap.add_argument("--upload-s", type=float, default=60.0, help="seconds of audio per recording")
    ap.add_argument("--calls-during", type=int, default=3, help="callers' utterances while the uploads decode")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schedules", default="whole,continuous", help="comma-separated: whole, continuous")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
