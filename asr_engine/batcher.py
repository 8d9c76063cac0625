"""Async front of the recognizer: one worker thread, dynamic batching, bounded queue.

Coroutines submit utterances and await transcripts; the worker takes what is waiting, up to
`max_batch`, waiting at most `max_wait_ms` for a batch to fill once the first item is there, and
decodes it in one go. The queue is bounded: when it is full, `submit` waits (back-pressure) up to
`admission_timeout_s` and then fails with `RecognizerOverloaded`, so an overloaded instance sheds
load instead of growing latency without bound.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from .metrics import ASR_AUDIO_SECONDS, ASR_BATCH, ASR_DECODE, ASR_LATENCY, ASR_QUEUE, ASR_REFINE, ASR_REJECTED
from .recognizer import Recognizer, Refine, Transcript, Utterance

log = logging.getLogger(__name__)


class RecognizerOverloaded(RuntimeError):
    """The queue stayed full for the whole admission timeout: shed this utterance."""


class RecognizerClosed(RuntimeError):
    """The recognizer was shut down."""


@dataclass
class _Job:
    utterance: Utterance
    future: asyncio.Future[Transcript]
    loop: asyncio.AbstractEventLoop
    submitted: float
    refine: Refine | None = None


_STOP = object()


class BatchingRecognizer:
    def __init__(
        self,
        recognizer: Recognizer,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        queue_size: int = 64,
        admission_timeout_s: float = 2.0,
    ) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.admission_timeout = admission_timeout_s
        self._queue: queue.Queue[_Job | object] = queue.Queue()
        self._slots = threading.BoundedSemaphore(queue_size)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="recognizer", daemon=True)
        self._thread.start()

    async def transcribe(self, utterance: Utterance, refine: Refine | None = None) -> Transcript:
        """The utterance's transcript (without its encoder output); `refine` (if any) reads it again in
        the worker, after decoding (`Recognizer.refined`)."""
        if self._closed:
            raise RecognizerClosed("recognizer is shut down")
        # The semaphore is a thread primitive: wait for it off the event loop.
        if not self._slots.acquire(blocking=False):
            got = await asyncio.to_thread(self._slots.acquire, True, self.admission_timeout)
            if not got:
                ASR_REJECTED.labels("overloaded").inc()
                raise RecognizerOverloaded("recognizer queue is full")
        loop = asyncio.get_running_loop()
        job = _Job(utterance, loop.create_future(), loop, time.perf_counter(), refine)
        self._queue.put(job)
        ASR_QUEUE.inc()
        return await job.future

    def _collect(self, first: _Job) -> list[_Job]:
        batch = [first]
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # finish this batch, then stop
                break
            batch.append(item)  # type: ignore[arg-type]
        return batch

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = self._collect(item)  # type: ignore[arg-type]
            ASR_QUEUE.dec(len(batch))
            live = [j for j in batch if not j.future.cancelled()]
            started = time.perf_counter()
            try:
                results = self.recognizer.recognize([j.utterance for j in live]) if live else []
            except Exception as exc:  # one bad batch must not take the worker down
                log.exception("recognizer batch of %d failed", len(live))
                ASR_REJECTED.labels("error").inc(len(live))
                for j in live:
                    j.loop.call_soon_threadsafe(_settle, j.future, None, exc)
                results = []
            else:
                if live:
                    biased = any(j.utterance.bias is not None for j in live)
                    ASR_DECODE.labels("yes" if biased else "no").observe(time.perf_counter() - started)
                ASR_BATCH.observe(len(live))
                done = list(zip(live, results, strict=True))
                # Plain transcripts go out first; refining may decode again and should not hold them.
                for j, r in sorted(done, key=lambda item: item[0].refine is not None and bool(item[1].text)):
                    if j.refine is not None and r.text:
                        r = self._refined(j.refine, j.utterance, r)
                    ASR_LATENCY.observe(time.perf_counter() - j.submitted)
                    ASR_AUDIO_SECONDS.inc(r.audio_seconds)
                    j.loop.call_soon_threadsafe(_settle, j.future, r.released(), None)
            finally:
                for _ in batch:
                    self._slots.release()

    def _refined(self, refine: Refine, utterance: Utterance, transcript: Transcript) -> Transcript:
        started = time.perf_counter()
        try:
            return self.recognizer.refined(refine, utterance, transcript)
        except Exception:  # the decoded transcript still stands
            log.exception("refining a transcript failed")
            ASR_REJECTED.labels("refine-error").inc()
            return transcript
        finally:
            ASR_REFINE.observe(time.perf_counter() - started)

    def close(self) -> None:
        """Stop after the queued work is done."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout=30)


def _settle(fut: asyncio.Future, result: Transcript | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
