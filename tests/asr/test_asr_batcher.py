"""The batcher's scheduling and supervision, with a recognizer that only takes time: utterances join
between decoder steps and leave when their own rows end, callers' turns go before upload chunks (which
pause while callers are decoded), the upload queue refuses what does not fit, cancelled utterances free
their rows, and a worker that dies or hangs is replaced with everything pending failed as
`RecognizerRestarted`; and /v1/recognize answers 503 for a recording that does not fit in the upload
queue."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from asr_engine.batcher import BatchingRecognizer, Priority, RecognizerBusy, RecognizerRestarted
from asr_engine.metrics import ASR_WORKER_RESTARTS
from asr_engine.recognizer import Transcript, Utterance

pytestmark = pytest.mark.timeout(30)


def _utt(tag: float, steps: int = 3) -> Utterance:
    """An utterance whose first sample names it and whose second says how many decoder steps it takes
    (the fake recognizer reads them back)."""
    samples = np.full(160, tag, np.float32)
    samples[1] = steps
    return Utterance(samples, 16000)


class TimedRecognizer:
    """Admits in `encode_s`, steps in `step_s`; records each admission's tags, each step's tags and
    each cancellation. A tag of -1 makes a step hand back a transcript for nobody (a bug outside a
    single decode); -2 makes its admission hang until released."""

    def __init__(self, step_s: float = 0.005, encode_s: float = 0.005) -> None:
        self.step_s = step_s
        self.encode_s = encode_s
        self.batches: list[list[float]] = []
        self.steps: list[list[float]] = []
        self.cancelled: list[float] = []
        self.release = threading.Event()
        self.stepped = threading.Event()  # a decoder step has run

    def start(self) -> FakeRecognition:
        return FakeRecognition(self)

    def refined(self, refine, utterance, transcript):  # pragma: no cover - no refine in these tests
        raise AssertionError("not used")


class FakeRecognition:
    def __init__(self, rec: TimedRecognizer) -> None:
        self.rec = rec
        self.rows: dict[Hashable, list[float]] = {}  # key -> [tag, steps left]

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, items: Sequence[tuple[Hashable, Utterance]]) -> None:
        tags = [float(u.samples[0]) for _, u in items]
        self.rec.batches.append(tags)
        if -2.0 in tags:
            self.rec.release.wait(10)
        time.sleep(self.rec.encode_s)
        self.rows.update((k, [float(u.samples[0]), float(u.samples[1])]) for k, u in items)

    def step(self) -> list[tuple[Hashable, Transcript]]:
        self.rec.steps.append([row[0] for row in self.rows.values()])
        self.rec.stepped.set()
        time.sleep(self.rec.step_s)
        out: list[tuple[Hashable, Transcript]] = []
        for key, row in list(self.rows.items()):
            row[1] -= 1
            if row[1] <= 0:
                del self.rows[key]
                owner = "nobody" if row[0] == -1.0 else key
                out.append((owner, Transcript(f"t{row[0]:g}", [], 1.0, 0.0, 0.0, 0.01)))
        return out

    def cancel(self, key: Hashable) -> None:
        if (row := self.rows.pop(key, None)) is not None:
            self.rec.cancelled.append(row[0])


async def test_a_call_during_upload_chunks_is_decoded_while_they_pause() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=8, max_wait_ms=5, upload_queue_size=16)  # type: ignore[arg-type]
    try:
        chunks = [_utt(100 + i, steps=40) for i in range(10)]
        upload = asyncio.create_task(batcher.transcribe_all(chunks, None, Priority.UPLOAD))
        assert await asyncio.to_thread(rec.stepped.wait, 5)  # the worker is into the recording's chunks
        calls = await asyncio.gather(*(batcher.transcribe(_utt(i)) for i in range(3)))
        assert [c.text for c in calls] == ["t0", "t1", "t2"]
        assert not upload.done()  # the callers did not wait for a chunk's decode to end
        assert len(await upload) == 10
        # The three calls were admitted together, upload chunks one at a time; no step ran both.
        assert [0.0, 1.0, 2.0] in rec.batches
        assert all(len(b) == 1 for b in rec.batches if b[0] >= 100)
        assert not any(min(s) < 100 <= max(s) for s in rec.steps)
        # Chunks (up to max_batch of them) ran beside each other.
        assert max(len(s) for s in rec.steps) > 1
    finally:
        batcher.close()


async def test_a_row_that_ends_early_is_out_before_its_batch_mates() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=8, max_wait_ms=50)  # type: ignore[arg-type]
    try:
        short = asyncio.create_task(batcher.transcribe(_utt(1, steps=2)))
        long = asyncio.create_task(batcher.transcribe(_utt(2, steps=60)))
        assert (await short).text == "t1"
        assert not long.done()
        assert rec.batches[0] == [1.0, 2.0]  # one batch
        # A caller arriving now joins the running batch and is out before the long row too.
        assert (await batcher.transcribe(_utt(3, steps=2))).text == "t3"
        assert not long.done() and [3.0] in rec.batches
        assert (await long).text == "t2"
    finally:
        batcher.close()


async def test_callers_in_a_burst_join_a_running_batch_in_groups() -> None:
    """Joining holds up every row in flight for the newcomers' encoding: while many wait, they join
    once half the rows are free, not one by one as each row ends."""
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=4, max_wait_ms=50)  # type: ignore[arg-type]
    try:
        first = [asyncio.create_task(batcher.transcribe(_utt(i, steps))) for i, steps in enumerate((20, 30, 400, 400))]
        assert await asyncio.to_thread(rec.stepped.wait, 5)
        burst = await asyncio.gather(*(batcher.transcribe(_utt(10 + i, steps=2)) for i in range(3)))
        assert [t.text for t in burst] == ["t10", "t11", "t12"]
        assert rec.batches == [[0.0, 1.0, 2.0, 3.0], [10.0, 11.0], [12.0]]
        assert not first[2].done()
        await asyncio.gather(*first)
    finally:
        batcher.close()


async def test_a_cancelled_utterance_frees_its_rows_and_queue_place() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=4, max_wait_ms=0, queue_size=1, admission_timeout_s=5)  # type: ignore[arg-type]
    try:
        abandoned = asyncio.create_task(batcher.transcribe(_utt(1, steps=10_000)))
        assert await asyncio.to_thread(rec.stepped.wait, 5)
        abandoned.cancel()
        # The only queue place comes back, and the abandoned rows stop taking steps.
        assert (await asyncio.wait_for(batcher.transcribe(_utt(2)), 5)).text == "t2"
        assert rec.cancelled == [1.0]
    finally:
        batcher.close()


async def test_upload_queue_refuses_a_recording_that_does_not_fit() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, upload_queue_size=6)  # type: ignore[arg-type]
    try:
        first = asyncio.create_task(batcher.transcribe_all([_utt(100 + i) for i in range(4)], None, Priority.UPLOAD))
        await asyncio.sleep(0)
        with pytest.raises(RecognizerBusy):
            await batcher.transcribe_all([_utt(200 + i) for i in range(3)], None, Priority.UPLOAD)
        assert len(await first) == 4
        # None of the refused recording's chunks was decoded; its places are free again.
        assert not any(b[0] >= 200 for b in rec.batches)
        assert len(await batcher.transcribe_all([_utt(300 + i) for i in range(6)], None, Priority.UPLOAD)) == 6
        # Calls are not bounded by the upload queue.
        assert (await batcher.transcribe(_utt(1))).text == "t1"
    finally:
        batcher.close()


async def test_a_crashed_worker_is_replaced_and_pending_utterances_fail() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=4, max_wait_ms=20)  # type: ignore[arg-type]
    before = ASR_WORKER_RESTARTS.labels("crashed")._value.get()
    try:
        results = await asyncio.gather(
            batcher.transcribe(_utt(-1, steps=1)), batcher.transcribe(_utt(5, steps=5)), return_exceptions=True
        )
        assert all(isinstance(r, RecognizerRestarted) for r in results), results
        assert ASR_WORKER_RESTARTS.labels("crashed")._value.get() == before + 1
        assert batcher.restarts == 1
        assert (await asyncio.wait_for(batcher.transcribe(_utt(6)), 5)).text == "t6"
    finally:
        batcher.close()


async def test_a_hung_decode_is_replaced_by_the_watchdog() -> None:
    rec = TimedRecognizer()
    batcher = BatchingRecognizer(rec, max_batch=1, max_wait_ms=0, worker_timeout_s=0.4)  # type: ignore[arg-type]
    before = ASR_WORKER_RESTARTS.labels("hung")._value.get()
    try:
        hung = asyncio.create_task(batcher.transcribe(_utt(-2)))
        queued = asyncio.create_task(batcher.transcribe(_utt(7)))
        for task in (hung, queued):
            with pytest.raises(RecognizerRestarted):
                await asyncio.wait_for(task, 5)
        assert ASR_WORKER_RESTARTS.labels("hung")._value.get() == before + 1
        # The new worker serves while the old one is still stuck.
        assert (await asyncio.wait_for(batcher.transcribe(_utt(8)), 5)).text == "t8"
        rec.release.set()  # what the stuck worker produces now is dropped
        await asyncio.sleep(0.1)
        assert (await batcher.transcribe(_utt(9))).text == "t9"
    finally:
        rec.release.set()
        batcher.close()


@pytest.mark.timeout(240)  # loads the model
async def test_recognize_refuses_a_recording_over_the_upload_queue(model_cache, shared) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from asr_engine.audio.wav import read_wav, wav_bytes
    from hotwords.auth import AdminAuth
    from ivr.app.config import AppConfig
    from ivr.app.routes import build_app
    from ivr.app.service import Service

    token = "upload-queue-test"
    config = AppConfig(
        recognizer={"engine": {"cache_dir": model_cache}, "upload_queue_size": 1},
        prompts={"cache_dir": model_cache / "prompts"},
    )
    svc = Service(config)
    auth = AdminAuth({"tests": token}, {"tests": ["recognize"]})
    headers = {"Authorization": f"Bearer {token}"}
    clip = read_wav(str(shared / "data/callers_dev/dev040.wav"))
    pcm = (np.asarray(clip.samples, np.float32) * 32767).astype(np.int16)
    gap = np.zeros(2 * clip.sample_rate, np.int16)  # more than the segmenter merges: two chunks
    async with TestClient(TestServer(build_app(svc, auth=auth))) as client:
        await asyncio.wait_for(svc.ready.wait(), 180)
        two = wav_bytes(np.concatenate([pcm, gap, pcm]), clip.sample_rate)
        resp = await client.post("/v1/recognize", data=two, headers=headers)
        assert resp.status == 503 and resp.headers["Retry-After"], await resp.text()
        assert "busy" in (await resp.json())["error"]
        resp = await client.post("/v1/recognize", data=wav_bytes(pcm, clip.sample_rate), headers=headers)
        assert resp.status == 200 and (await resp.json())["text"]
