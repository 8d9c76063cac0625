"""The batcher's scheduling and supervision, with a recognizer that only takes time: callers' turns
go before queued upload chunks, the upload queue refuses what does not fit, and a worker that dies or
hangs is replaced with everything pending failed as `RecognizerRestarted`; and /v1/recognize answers 503
for a recording that does not fit in the upload queue."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from asr_engine.batcher import BatchingRecognizer, Priority, RecognizerBusy, RecognizerRestarted
from asr_engine.metrics import ASR_WORKER_RESTARTS
from asr_engine.recognizer import Transcript, Utterance

pytestmark = pytest.mark.timeout(30)


def _utt(tag: float) -> Utterance:
    """An utterance whose first sample names it (the fake recognizer reads it back)."""
    return Utterance(np.full(160, tag, np.float32), 16000)


class TimedRecognizer:
    """Decodes in `seconds_per_utterance` per utterance; records each batch's tags. A tag of -1 makes
    it return too few transcripts (a bug outside a single decode); -2 makes it hang until released."""

    def __init__(self, seconds_per_utterance: float = 0.05) -> None:
        self.seconds = seconds_per_utterance
        self.batches: list[list[float]] = []
        self.release = threading.Event()

    def recognize(self, utts: list[Utterance]) -> list[Transcript]:
        tags = [float(u.samples[0]) for u in utts]
        self.batches.append(tags)
        if -2.0 in tags:
            self.release.wait(10)
        time.sleep(self.seconds * len(utts))
        out = [Transcript(f"t{t:g}", [], 1.0, 0.0, 0.0, 0.01) for t in tags]
        return out[:-1] if -1.0 in tags else out

    def refined(self, refine, utterance, transcript):  # pragma: no cover - no refine in these tests
        raise AssertionError("not used")


async def test_calls_go_before_queued_upload_chunks() -> None:
    rec = TimedRecognizer(0.05)
    batcher = BatchingRecognizer(rec, max_batch=8, max_wait_ms=5, upload_queue_size=16)  # type: ignore[arg-type]
    try:
        upload = asyncio.create_task(batcher.transcribe_all([_utt(100 + i) for i in range(10)], None, Priority.UPLOAD))
        await asyncio.sleep(0.12)  # the worker is into the recording's chunks
        started = time.perf_counter()
        calls = await asyncio.gather(*(batcher.transcribe(_utt(i)) for i in range(3)))
        waited = time.perf_counter() - started
        assert [c.text for c in calls] == ["t0", "t1", "t2"]
        # One chunk in hand (50 ms) plus the calls' own batch (150 ms), not the 10 queued chunks (500 ms).
        assert waited < 0.4, waited
        assert len(await upload) == 10
        # Upload chunks one at a time; the three calls together, before the rest of the recording.
        call_batch = next(i for i, b in enumerate(rec.batches) if b[0] < 100)
        assert rec.batches[call_batch] == [0.0, 1.0, 2.0]
        assert all(len(b) == 1 for b in rec.batches if b[0] >= 100)
        assert call_batch < 5
    finally:
        batcher.close()


async def test_upload_queue_refuses_a_recording_that_does_not_fit() -> None:
    rec = TimedRecognizer(0.05)
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
    rec = TimedRecognizer(0.02)
    batcher = BatchingRecognizer(rec, max_batch=4, max_wait_ms=20)  # type: ignore[arg-type]
    before = ASR_WORKER_RESTARTS.labels("crashed")._value.get()
    try:
        results = await asyncio.gather(
            batcher.transcribe(_utt(-1)), batcher.transcribe(_utt(5)), return_exceptions=True
        )
        assert all(isinstance(r, RecognizerRestarted) for r in results), results
        assert ASR_WORKER_RESTARTS.labels("crashed")._value.get() == before + 1
        assert batcher.restarts == 1
        assert (await asyncio.wait_for(batcher.transcribe(_utt(6)), 5)).text == "t6"
    finally:
        batcher.close()


async def test_a_hung_decode_is_replaced_by_the_watchdog() -> None:
    rec = TimedRecognizer(0.0)
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
