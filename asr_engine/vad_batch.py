"""All streams' VAD on one thread, batched across streams.

One Silero inference for many streams' 32 ms chunks costs far less than one inference per stream
(`bench/vad.py`: 40-56 % less CPU per call-second at 4 to 20 streams). Each call hands its audio to
the batcher and awaits its events; the thread takes every job queued since its last pass, feeds
their audio, and judges it in rounds: a round is the next whole chunk of every stream that has one,
in one inference (at most `max_batch` rows each). Each stream's endpointer still judges its own
chunks in order, so the events are those one inference per chunk gives.

A pass takes what is queued and never waits for more: with the thread idle a call's audio is judged
at once, alone; calls batch when audio arrives while the thread is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .metrics import VAD_BATCH
from .vad import SileroVad, VadEvent, VadState

# After a stream's audio is judged: the events that ending its input adds, if the caller ended it.
Finish = Callable[[], list[VadEvent]]


class Batchable(Protocol):
    """A stream whose fed audio waits to be judged (`RecognitionStream`, `Endpointer`)."""

    def next_chunk(self) -> tuple[VadState, np.ndarray] | None: ...

    def judge(self, p: float) -> list[VadEvent]: ...


@dataclass(eq=False)
class _Job:
    stream: Batchable
    feed: Callable[[], Finish]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[VadEvent]]
    events: list[VadEvent] = field(default_factory=list)
    error: BaseException | None = None


class VadBatcher:
    def __init__(self, vad: SileroVad, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.vad = vad
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vad")
        self._lock = threading.Lock()
        self._jobs: list[_Job] = []  # guarded by _lock

    async def run(self, stream: Batchable, feed: Callable[[], Finish]) -> list[VadEvent]:
        """Judge a stream's audio on the VAD thread and return the events it caused.

        `feed` runs on the VAD thread first: it feeds the stream its audio (and sets what the stream
        needs set before it) and returns what runs there once that audio is judged."""
        loop = asyncio.get_running_loop()
        job = _Job(stream, feed, loop, loop.create_future())
        with self._lock:
            self._jobs.append(job)
        self._executor.submit(self._pass)
        return await job.future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(job.future.cancel)

    def _pass(self) -> None:
        """On the VAD thread: every job queued so far, batched."""
        while jobs := self._take():
            self._judge(jobs)

    def _take(self) -> list[_Job]:
        """The queued jobs, one per stream: a stream's later job waits for the next batch, since its
        chunks must be judged after those of the job before."""
        with self._lock:
            taken: list[_Job] = []
            streams: set[int] = set()
            later: list[_Job] = []
            for job in self._jobs:
                (later if id(job.stream) in streams else taken).append(job)
                streams.add(id(job.stream))
            self._jobs = later
        return taken

    def _judge(self, jobs: list[_Job]) -> None:
        finishes: dict[_Job, Finish] = {}
        for job in jobs:
            try:
                finishes[job] = job.feed()
            except Exception as e:  # the caller's feed failed: its call gets the error, the others go on
                job.error = e
        active = jobs
        while active := [job for job in active if job.error is None and job.stream.next_chunk() is not None]:
            for i in range(0, len(active), self.max_batch):
                self._round(active[i : i + self.max_batch])
        for job in jobs:
            if job.error is None:
                try:
                    job.events += finishes[job]()
                except Exception as e:  # as for feed
                    job.error = e
            # A loop already closed has no one left waiting for these events.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.future, job.events, job.error)

    def _round(self, jobs: list[_Job]) -> None:
        """The next chunk of each of these streams (each has one), in one inference."""
        ready = [r for job in jobs if (r := job.stream.next_chunk()) is not None]
        VAD_BATCH.observe(len(ready))
        try:
            probs = self.vad.probabilities([state for state, _ in ready], np.stack([chunk for _, chunk in ready]))
        except Exception as e:  # the inference failed: every call in it gets the error
            for job in jobs:
                job.error = e
            return
        for job, p in zip(jobs, probs, strict=True):
            try:
                job.events += job.stream.judge(float(p))
            except Exception as e:  # as for feed
                job.error = e


def _settle(future: asyncio.Future[list[VadEvent]], events: list[VadEvent], error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(events)
