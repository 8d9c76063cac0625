"""Async front of the recognizer: one worker thread, continuous batching, two priorities, a watchdog.

Coroutines submit utterances and await transcripts. The worker decodes one decoder step at a time for
every utterance in flight (`Recognizer.start`): between steps, waiting utterances join (encoded together)
and each transcript goes out as soon as its own search ends, not when its batch-mates' do.

Callers' turns (`Priority.CALL`) come first: up to `max_batch` of them are in flight; when none is,
the worker waits at most `max_wait_ms` for more to arrive before encoding the first. Joining holds up
the rows in flight for the newcomers' encoding, so while many wait (a burst) they join in groups, once
half the rows are free; one alone joins at once. Uploads
(`Priority.UPLOAD`, `/v1/recognize` chunks) run in a batch of their own, joined one chunk at a time
and only when no caller's utterance waits or is in flight: while callers are decoded the uploads are
paused where they are (their state kept), so a caller who speaks during a long recording waits for
one upload step or one chunk's encoding at most, never for a whole chunk's decode.

Both queues are bounded. When callers' utterances fill theirs, `transcribe` waits (back-pressure) up to
`admission_timeout_s` and then fails with `RecognizerOverloaded`. Uploads do not wait: a recording
whose chunks do not fit in the upload queue is refused at once with `RecognizerBusy`.

The worker is watched: if it dies (an exception outside a single decode) or one round of its loop
(admitting, a decoder step, refining what it finished) runs past `worker_timeout_s` (a hung decode),
everything pending fails with `RecognizerRestarted` and a new worker takes over; a hung thread cannot be
stopped, so whatever it produces later is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from .metrics import (
    ASR_AUDIO_SECONDS,
    ASR_BATCH,
    ASR_DECODE,
    ASR_LATENCY,
    ASR_QUEUE,
    ASR_REFINE,
    ASR_REJECTED,
    ASR_WORKER_RESTARTS,
)
from .recognizer import Recognition, Recognizer, Refine, Transcript, Utterance

log = logging.getLogger(__name__)


class RecognizerOverloaded(RuntimeError):
    """The queue stayed full for the whole admission timeout: shed this utterance."""


class RecognizerBusy(RecognizerOverloaded):
    """The upload queue cannot take this recording now: retry later."""


class RecognizerRestarted(RuntimeError):
    """The worker died or hung while this utterance was pending; a new worker has taken over."""


class RecognizerClosed(RuntimeError):
    """The recognizer was shut down."""


class Priority(IntEnum):
    CALL = 0  # a caller waits on the line for the answer
    UPLOAD = 1  # a recording posted over HTTP


@dataclass(eq=False)
class _Job:
    utterance: Utterance
    future: asyncio.Future[Transcript]
    loop: asyncio.AbstractEventLoop
    submitted: float
    priority: Priority
    refine: Refine | None = None
    done: bool = field(default=False)  # settled and its slot given back (guarded by the batcher's lock)
    admitted: float = 0.0  # when the worker took it in


@dataclass
class _Worker:
    thread: threading.Thread | None = None
    jobs: set[_Job] = field(default_factory=set)  # taken in and not settled yet
    busy_since: float | None = None  # when the round of work in hand began
    retired: bool = False  # replaced: nothing it still produces counts


@dataclass
class _Lanes:
    """The worker's running batches: callers' utterances, and upload chunks (paused while callers run)."""

    calls: Recognition
    uploads: Recognition

    def of(self, priority: Priority) -> Recognition:
        return self.calls if priority is Priority.CALL else self.uploads


class BatchingRecognizer:
    def __init__(
        self,
        recognizer: Recognizer,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        queue_size: int = 64,
        admission_timeout_s: float = 2.0,
        upload_queue_size: int = 32,
        worker_timeout_s: float = 30.0,
    ) -> None:
        self.recognizer = recognizer
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.admission_timeout = admission_timeout_s
        self.upload_queue_size = upload_queue_size
        self.worker_timeout = worker_timeout_s
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # work was queued, or the batcher closes
        self._calls: deque[_Job] = deque()
        self._uploads: deque[_Job] = deque()
        self._uploads_held = 0  # upload utterances queued or being decoded
        self._slots = threading.BoundedSemaphore(queue_size)  # call utterances queued or being decoded
        self._closed = False
        self._stopping = False
        self._stopped = threading.Event()  # wakes the watchdog at close
        self.restarts = 0
        self._worker = self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="recognizer-watchdog", daemon=True)
        self._watchdog.start()

    # -- submitting --------------------------------------------------------------------------------
    async def transcribe(
        self, utterance: Utterance, refine: Refine | None = None, priority: Priority = Priority.CALL
    ) -> Transcript:
        """The utterance's transcript (without its encoder output); `refine` (if any) reads it again in
        the worker, after decoding (`Recognizer.refined`)."""
        (transcript,) = await self.transcribe_all([utterance], refine, priority)
        return transcript

    async def transcribe_all(
        self, utterances: Sequence[Utterance], refine: Refine | None = None, priority: Priority = Priority.CALL
    ) -> list[Transcript]:
        """Transcripts of `utterances` in order. Uploads are admitted all together or not at all, so a
        refused recording leaves none of its chunks behind to be decoded for nobody."""
        if self._closed:
            raise RecognizerClosed("recognizer is shut down")
        if not utterances:
            return []
        if priority is Priority.UPLOAD:
            futures = self._submit_uploads(utterances, refine)
        else:
            futures = [await self._submit_call(u, refine) for u in utterances]
        return list(await asyncio.gather(*futures))

    async def _submit_call(self, utterance: Utterance, refine: Refine | None) -> asyncio.Future[Transcript]:
        # The semaphore is a thread primitive: wait for it off the event loop.
        if not self._slots.acquire(blocking=False):
            got = await asyncio.to_thread(self._slots.acquire, True, self.admission_timeout)
            if not got:
                ASR_REJECTED.labels("overloaded").inc()
                raise RecognizerOverloaded("recognizer queue is full")
        job = self._job(utterance, refine, Priority.CALL)
        with self._lock:
            self._calls.append(job)
            self._ready.notify()
        ASR_QUEUE.inc()
        return job.future

    def _submit_uploads(self, utterances: Sequence[Utterance], refine: Refine | None) -> list[asyncio.Future]:
        jobs = [self._job(u, refine, Priority.UPLOAD) for u in utterances]
        with self._lock:
            if self._uploads_held + len(jobs) > self.upload_queue_size:
                ASR_REJECTED.labels("upload-queue-full").inc(len(jobs))
                raise RecognizerBusy(f"upload queue is full ({self._uploads_held} of {self.upload_queue_size})")
            self._uploads_held += len(jobs)
            self._uploads.extend(jobs)
            self._ready.notify()
        ASR_QUEUE.inc(len(jobs))
        return [j.future for j in jobs]

    def _job(self, utterance: Utterance, refine: Refine | None, priority: Priority) -> _Job:
        loop = asyncio.get_running_loop()
        return _Job(utterance, loop.create_future(), loop, time.perf_counter(), priority, refine)

    # -- the worker --------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        worker = _Worker()
        worker.thread = threading.Thread(target=self._run, args=(worker,), name="recognizer", daemon=True)
        worker.thread.start()
        return worker

    def _take(self, worker: _Worker, lanes: _Lanes) -> list[_Job] | None:
        """Utterances to admit before the next step (callers' first; else one upload chunk when no caller
        waits or runs), [] to go on stepping what runs; None when stopping with nothing left."""
        calls_running, uploads_running = len(lanes.calls), len(lanes.uploads)
        with self._lock:
            while True:
                if worker.retired:
                    return None
                if self._calls_join(calls_running):
                    break
                if self._uploads and not self._calls and not calls_running and uploads_running < self.max_batch:
                    break
                if calls_running or uploads_running:
                    worker.busy_since = time.perf_counter()
                    return []
                if self._stopping:
                    return None
                self._ready.wait()
            if self._calls_join(calls_running):
                room = self.max_batch - calls_running
                if not calls_running:
                    # Nothing of callers' in flight: a few ms for more to arrive, to encode them together.
                    deadline = time.perf_counter() + self.max_wait
                    while len(self._calls) < room and not self._stopping:
                        remaining = deadline - time.perf_counter()
                        if remaining <= 0:
                            break
                        self._ready.wait(remaining)
                    if worker.retired:
                        return None
                batch = [self._calls.popleft() for _ in range(min(room, len(self._calls)))]
            else:
                batch = [self._uploads.popleft()]
            now = time.perf_counter()
            for j in batch:
                j.admitted = now
            worker.jobs.update(batch)
            worker.busy_since = now
        ASR_QUEUE.dec(len(batch))
        return batch

    def _calls_join(self, running: int) -> bool:
        """Whether waiting callers' utterances join now. Their encoding holds up every row in flight,
        so in a burst they join in groups (once half the rows are free) rather than one by one."""
        free = self.max_batch - running
        return bool(self._calls) and free > 0 and (not running or free >= min(len(self._calls), self.max_batch // 2))

    def _run(self, worker: _Worker) -> None:
        try:
            lanes = _Lanes(self.recognizer.start(), self.recognizer.start())
            while (batch := self._take(worker, lanes)) is not None:
                self._drop_cancelled(worker, lanes)
                if batch:
                    self._admit(worker, lanes, batch)
                # Upload chunks step only while no caller's utterance is in flight.
                running = Priority.CALL if len(lanes.calls) else Priority.UPLOAD
                if len(lanes.of(running)):
                    self._step(worker, lanes, running)
                with self._lock:
                    worker.busy_since = None
        except BaseException:
            log.exception("recognizer worker died")
            self._restart(worker, "crashed")

    def _drop_cancelled(self, worker: _Worker, lanes: _Lanes) -> None:
        """Utterances nobody awaits any more leave their batch, freeing their rows and queue places."""
        with self._lock:
            gone = [j for j in worker.jobs if j.future.cancelled()]
        for j in gone:
            lanes.of(j.priority).cancel(j)
        self._finish(worker, gone, RecognizerClosed("no transcript"))

    def _admit(self, worker: _Worker, lanes: _Lanes, batch: list[_Job]) -> None:
        live = [j for j in batch if not j.future.cancelled()]
        self._finish(worker, [j for j in batch if j.future.cancelled()], RecognizerClosed("no transcript"))
        try:
            lanes.of(batch[0].priority).admit([(j, j.utterance) for j in live])
        except Exception as exc:  # one bad admission must not take the worker down
            log.exception("admitting %d utterances failed", len(live))
            ASR_REJECTED.labels("error").inc(len(live))
            self._finish(worker, live, exc)

    def _step(self, worker: _Worker, lanes: _Lanes, priority: Priority) -> None:
        run = lanes.of(priority)
        ASR_BATCH.observe(len(run))
        try:
            done = run.step()
        except Exception as exc:  # the batch's state is lost, not the worker
            log.exception("decoder step of %d utterances failed", len(run))
            with self._lock:
                failed = [j for j in worker.jobs if j.priority is priority]
            ASR_REJECTED.labels("error").inc(len(failed))
            if priority is Priority.CALL:
                lanes.calls = self.recognizer.start()
            else:
                lanes.uploads = self.recognizer.start()
            self._finish(worker, failed, exc)
            return
        # Plain transcripts go out first; refining may decode again and should not hold them.
        for job, r in sorted(done, key=lambda item: item[0].refine is not None and bool(item[1].text)):
            assert isinstance(job, _Job)
            ASR_DECODE.labels("no" if job.utterance.bias is None else "yes").observe(time.perf_counter() - job.admitted)
            if job.refine is not None and r.text:
                r = self._refined(job.refine, job.utterance, r)
            ASR_LATENCY.observe(time.perf_counter() - job.submitted)
            ASR_AUDIO_SECONDS.inc(r.audio_seconds)
            self._finish(worker, [job], None, r.released())

    def _finish(
        self, worker: _Worker | None, jobs: list[_Job], exc: BaseException | None, result: Transcript | None = None
    ) -> None:
        """Settle `jobs` not settled yet and give back their queue places; a retired worker's jobs were
        already failed when it was replaced."""
        with self._lock:
            if worker is not None and worker.retired:
                return
            if worker is not None:
                worker.jobs.difference_update(jobs)
            fresh = [j for j in jobs if not j.done]
            for j in fresh:
                j.done = True
                if j.priority is Priority.UPLOAD:
                    self._uploads_held -= 1
        for j in fresh:
            if j.priority is Priority.CALL:
                self._slots.release()
            j.loop.call_soon_threadsafe(_settle, j.future, result, exc)

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

    # -- the watchdog ------------------------------------------------------------------------------
    def _watch(self) -> None:
        interval = min(1.0, self.worker_timeout / 4)
        while not self._stopped.wait(interval):
            with self._lock:
                worker = self._worker
                hung = worker.busy_since is not None and time.perf_counter() - worker.busy_since > self.worker_timeout
            if hung:
                log.error("recognizer worker hung for over %.1f s", self.worker_timeout)
                self._restart(worker, "hung")

    def _restart(self, worker: _Worker, reason: str) -> None:
        """Fail everything pending (it may be what broke the worker) and start a new worker."""
        with self._lock:
            if worker.retired or worker is not self._worker:
                return
            pending = [*worker.jobs, *self._calls, *self._uploads]
            queued = len(self._calls) + len(self._uploads)
            self._calls.clear()
            self._uploads.clear()
        ASR_QUEUE.dec(queued)
        ASR_WORKER_RESTARTS.labels(reason).inc()
        ASR_REJECTED.labels("restart").inc(sum(not j.done for j in pending))
        self._finish(None, pending, RecognizerRestarted(f"recognizer worker {reason}; restarted"))
        with self._lock:
            worker.retired = True
            self._ready.notify_all()
            if self._stopping:
                return
            self.restarts += 1
            self._worker = self._spawn()
        log.warning("recognizer worker restarted (%s), %d utterances failed", reason, len(pending))

    def close(self) -> None:
        """Stop after the queued work is done."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._stopping = True
            self._stopped.set()
            self._ready.notify_all()
            thread = self._worker.thread
        assert thread is not None
        thread.join(timeout=30)
        self._watchdog.join(timeout=5)


def _settle(fut: asyncio.Future, result: Transcript | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
