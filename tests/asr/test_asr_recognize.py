"""Recognition behaviour: no invented text on non-speech, the streaming API, batching and
back-pressure, the transcribe command and the /v1/recognize endpoint."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from asr_engine.audio.wav import Audio, read_wav, wav_bytes
from asr_engine.batcher import BatchingRecognizer, RecognizerOverloaded
from asr_engine.recognizer import Utterance
from asr_engine.streaming import StreamingRecognizer
from asr_engine.transcribe import transcribe_audio
from asr_engine.vad import SpeechEnd, SpeechStart

RNG = np.random.default_rng(7)
API_TOKEN = "recognize-test-token"
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def _non_speech() -> dict[str, np.ndarray]:
    n = 8000 * 3
    click = np.zeros(n, np.float32)
    click[8000 : 8000 + 1600] = RNG.normal(0, 0.5, 1600)  # 0.2 s burst
    line_noise = RNG.normal(0, 0.03, n).astype(np.float32)
    hum = (0.2 * np.sin(2 * np.pi * 60 * np.arange(n) / 8000)).astype(np.float32) + line_noise
    return {"silence": np.zeros(n, np.float32), "noise": line_noise, "click": click, "hum": hum}


@pytest.mark.parametrize("kind", ["silence", "noise", "click", "hum"])
def test_non_speech_gives_no_text(recognizer, vad, kind):
    x = _non_speech()[kind]
    assert transcribe_audio(recognizer, vad, Audio(x, 8000)).text == ""


def test_digital_silence_is_not_decoded_even_without_vad(recognizer):
    t = recognizer.recognize([Utterance(np.zeros(16000, np.float32), 16000)])[0]
    assert t.text == "" and t.rejected == "silence"


def test_real_recording_transcribed(recognizer, vad, asterisk_dev):
    wav, ref = next((p, r) for p, r in asterisk_dev if p.stem == "agent-pass")
    text = transcribe_audio(recognizer, vad, read_wav(str(wav))).text
    assert text.lower().strip(".").replace(",", "") == ref


def test_streaming_api_batches_streams(recognizer, vad, shared):
    rec = StreamingRecognizer(recognizer, vad=vad)
    clips = [read_wav(str(shared / f"data/callers_dev/dev0{i}.wav")) for i in (31, 36, 40)]
    streams = [rec.create_stream() for _ in clips]
    events: list[list] = [[] for _ in clips]
    # 20 ms telephone packets, interleaved across calls as a media server would see them.
    for off in range(0, max(len(c.samples) for c in clips), 160):
        for s, c, ev in zip(streams, clips, events, strict=True):
            pcm = (c.samples[off : off + 160] * 32767).astype(np.int16)
            if len(pcm):
                ev.extend(s.accept_waveform(8000, pcm))
    for s, ev in zip(streams, events, strict=True):
        ev.extend(s.input_finished())
        assert isinstance(ev[0], SpeechStart) and any(isinstance(e, SpeechEnd) for e in ev)
    assert all(rec.is_ready(s) for s in streams)
    calls = []
    original = recognizer.recognize
    recognizer.recognize = lambda utts: calls.append(len(utts)) or original(utts)
    try:
        rec.decode_streams(streams)
    finally:
        recognizer.recognize = original
    assert calls == [3]  # one batch for the three callers
    for s, c in zip(streams, clips, strict=True):
        (res,) = s.get_results()
        offline = transcribe_audio(recognizer, vad, c).text
        assert res.text and res.text == offline
        assert 0 <= res.start < res.end <= c.seconds + 0.1 and 0 < res.confidence <= 1


async def test_batcher_groups_concurrent_requests(recognizer, shared):
    clips = [read_wav(str(shared / f"data/callers_dev/dev0{i}.wav")) for i in range(31, 39)]
    sizes: list[int] = []  # utterances encoded together when they join the batch
    original = recognizer.encode
    recognizer.encode = lambda utts: sizes.append(len(utts)) or original(utts)
    batcher = BatchingRecognizer(recognizer, max_batch=8, max_wait_ms=50, queue_size=16)
    try:
        results = await asyncio.gather(*(batcher.transcribe(Utterance(c.samples, 8000)) for c in clips))
    finally:
        batcher.close()
        recognizer.encode = original
    assert all(r.text for r in results)
    assert sum(sizes) == len(clips) and max(sizes) > 1, sizes


async def test_batcher_back_pressure_rejects_when_full(recognizer):
    release = __import__("threading").Event()
    original = recognizer.encode

    def slow(utts):
        release.wait(10)
        return original(utts)

    recognizer.encode = slow
    batcher = BatchingRecognizer(recognizer, max_batch=1, max_wait_ms=0, queue_size=2, admission_timeout_s=0.2)
    utt = Utterance(RNG.normal(0, 0.1, 8000).astype(np.float32), 8000)
    try:
        first = [asyncio.create_task(batcher.transcribe(utt)) for _ in range(2)]
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        with pytest.raises(RecognizerOverloaded):
            await batcher.transcribe(utt)
        assert 0.15 < time.perf_counter() - t0 < 2.0  # waited (back-pressure), then gave up
        release.set()
        await asyncio.wait_for(asyncio.gather(*first), 30)
    finally:
        release.set()
        batcher.close()
        recognizer.encode = original


def test_transcribe_command_json(tmp_path, shared, model_cache):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEnope")
    files = [str(shared / "data/callers_dev/dev033.wav"), str(bad)]
    proc = subprocess.run(
        [sys.executable, "-m", "ivr.app.cli", "transcribe", "--json", "--cache-dir", str(model_cache), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1, proc.stderr  # one file failed
    assert lines[0]["file"] == files[0] and lines[0]["text"] and lines[0]["seconds"] > 0
    assert lines[1]["file"] == files[1] and lines[1]["error"] == "no fmt chunk"


async def test_recognize_endpoint(model_cache, shared):
    from aiohttp.test_utils import TestClient, TestServer

    from hotwords.auth import AdminAuth
    from ivr.app.config import AppConfig
    from ivr.app.routes import build_app
    from ivr.app.service import Service

    config = AppConfig(
        recognizer={"engine": {"cache_dir": model_cache}},
        prompts={"cache_dir": model_cache / "prompts"},
        http={"max_body_mb": 1},
    )
    svc = Service(config)
    auth = AdminAuth({"tests": API_TOKEN}, {"tests": ["recognize", "reader"]})
    async with TestClient(TestServer(build_app(svc, auth=auth))) as client:
        await _exercise_recognize(client, svc, shared)


async def _exercise_recognize(client, svc, shared) -> None:
    assert (await client.get("/healthz")).status == 200
    await asyncio.wait_for(svc.ready.wait(), 120)
    assert (await client.get("/readyz")).status == 200
    body = (shared / "data/callers_dev/dev040.wav").read_bytes()
    resp = await client.post("/v1/recognize", data=body, headers=API_AUTH)
    assert resp.status == 200
    out = await resp.json()
    assert out["text"] and out["seconds"] > 0 and out["segments"][0]["end"] > out["segments"][0]["start"]
    resp = await client.post("/v1/recognize", data=b"definitely not audio", headers=API_AUTH)
    assert resp.status == 400 and "bad audio" in (await resp.json())["error"]
    resp = await client.post("/v1/recognize", data=wav_bytes(np.zeros(8000 * 70, np.int16), 8000), headers=API_AUTH)
    assert resp.status == 413
    metrics = await (await client.get("/metrics", headers=API_AUTH)).text()
    assert "voicenav_asr_latency_seconds_count" in metrics and 'voicenav_http_rejected_total{reason="bad-audio"' in (
        metrics.replace('route="recognize",', "")
    )


def test_compare_prefers_what_was_said(recognizer, shared):
    """Weighed on the audio, the spoken words beat a sound-alike, which beats an unrelated sentence."""
    clip = read_wav(str(shared / "data/callers_dev/dev033.wav"))  # "my internet is not working"
    utt = Utterance(clip.samples, clip.sample_rate)
    said, other = recognizer.compare(
        utt, "My intranet is knot working.", ["My internet is not working.", "Please transfer me to billing."]
    )
    assert said > 0 > other
    assert recognizer.compare(utt, "My internet is not working.", ["My intranet is knot working."])[0] < 0


def test_compare_reuses_the_decode_and_branches_off_the_shared_beginning(recognizer, shared):
    """Comparing after recognition reads the kept encoder output (no second encode). A text that
    branches off the base mid-way is scored on the base's cached beginning: weighed over its whole
    ending, it must come out as two comparisons against a text that shares nothing with either."""
    from asr_engine.decoding.search import DecodeRequest

    clip = read_wav(str(shared / "data/callers_dev/dev033.wav"))
    utt = Utterance(clip.samples, clip.sample_rate)
    t = recognizer.recognize([utt])[0]
    assert t.encoding is not None
    encode, calls = recognizer.engine.encode, []
    recognizer.engine.encode = lambda mel: calls.append(mel) or encode(mel)
    try:
        assert recognizer.compare(utt, t.text, [t.text], t.encoding) == [0.0]
        hold, thanks = recognizer.compare(utt, t.text, ["Please hold.", "Thank you for calling."], t.encoding)
        (between,) = recognizer.compare(utt, "Please hold.", ["Thank you for calling."], t.encoding)
    finally:
        recognizer.engine.encode = encode
    assert calls == []
    assert hold < 0 and thanks < 0
    # Texts that differ from their first token on are weighed whole: the comparisons chain.
    assert between == pytest.approx(thanks - hold, abs=1.0)

    k, v = t.encoding
    req = DecodeRequest(k, v, len(utt.samples) / utt.sample_rate)
    base, branch, apart = (
        recognizer.tokenizer.encode(" " + text)
        for text in ("My internet is not working today.", "My intranet is not working today.", "Please hold.")
    )
    cfg, tail = recognizer.config.decode, recognizer.tail
    (branched,) = recognizer.searcher.compare(req, base, [branch], cfg, tail, after=100)
    via_apart = recognizer.searcher.compare(req, apart, [base, branch], cfg, tail, after=100)
    assert branched == pytest.approx(via_apart[1] - via_apart[0], abs=1.0)
    # Judged only where they differ (plus a token), the same pair keeps its order.
    (local,) = recognizer.searcher.compare(req, base, [branch], cfg, tail)
    assert (local < 0) == (branched < 0)


async def test_batcher_refines_in_its_worker_and_survives_a_failing_refine(recognizer, shared):
    """A refine step runs on the recognizer's thread (it may decode again) with the decode's encoder
    output, rewrites only its own utterance into a new transcript whose tokens say its text, and one
    that fails leaves the decoded transcript in place."""
    import threading

    from prometheus_client import REGISTRY

    clip = read_wav(str(shared / "data/callers_dev/dev033.wav"))
    threads: list[str] = []

    def shout(utt, transcript):
        threads.append(threading.current_thread().name)
        assert transcript.encoding is not None  # the decode's encoder output is there to score against
        return transcript.text.upper()

    def broken(_utt, _transcript):
        raise RuntimeError("refine blew up")

    def failures() -> float:
        return REGISTRY.get_sample_value("voicenav_asr_rejected_total", {"reason": "refine-error"}) or 0.0

    def refines() -> float:
        return REGISTRY.get_sample_value("voicenav_asr_refine_seconds_count") or 0.0

    def batches() -> float:
        return REGISTRY.get_sample_value("voicenav_asr_decode_seconds_count", {"biased": "no"}) or 0.0

    before, refined, decoded = failures(), refines(), batches()
    batcher = BatchingRecognizer(recognizer, max_batch=4, max_wait_ms=50)
    try:
        shouted, plain, survived = await asyncio.gather(
            batcher.transcribe(Utterance(clip.samples, 8000), shout),
            batcher.transcribe(Utterance(clip.samples, 8000)),
            batcher.transcribe(Utterance(clip.samples, 8000), broken),
        )
    finally:
        batcher.close()
    assert threads == ["recognizer"]
    assert shouted.text == plain.text.upper() != plain.text
    assert recognizer.tokenizer.decode(shouted.tokens).strip() == shouted.text
    assert shouted.refined_from is not None and shouted.refined_from.text == plain.text
    assert shouted.confidence == shouted.refined_from.confidence == plain.confidence  # the decode's
    assert shouted.token_logprobs == [] and plain.token_logprobs
    assert survived.text == plain.text and survived.refined_from is None
    assert all(t.encoding is None for t in (shouted, plain, survived, shouted.refined_from))
    assert failures() == before + 1
    # Both refine steps are timed, the failed one too; the decode of the unbiased batch is timed.
    assert refines() == refined + 2 and batches() > decoded


def test_a_rewritten_transcript_says_its_text_and_keeps_its_decode(recognizer, shared):
    import dataclasses

    clip = read_wav(str(shared / "data/callers_dev/dev033.wav"))
    decoded = recognizer.recognize([Utterance(clip.samples, clip.sample_rate)])[0]
    assert recognizer.rewritten(decoded, decoded.text) is decoded  # nothing to rewrite
    for text in ("My Zentrix Unlimited keeps dropping.", "MY INTERNET IS NOT WORKING!", "Ünïcode, 42 % off"):
        rewritten = recognizer.rewritten(decoded, text)
        assert rewritten.text == text and recognizer.tokenizer.decode(rewritten.tokens).strip() == text
        assert rewritten.refined_from == decoded and rewritten.refined_from.encoding is None
        assert (rewritten.confidence, rewritten.avg_logprob) == (decoded.confidence, decoded.avg_logprob)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rewritten.text = "changed in place"  # type: ignore[misc]
    assert decoded.text != text  # the decoded transcript is as it was


async def test_cli_and_http_transcribe_a_recording_alike(model_cache, shared):
    """`voicenav transcribe` and POST /v1/recognize run the same steps (`asr_engine.transcribe`)."""
    from aiohttp.test_utils import TestClient, TestServer

    from hotwords.auth import AdminAuth
    from ivr.app.config import AppConfig
    from ivr.app.routes import build_app
    from ivr.app.service import Service

    wav = shared / "data/callers_dev/dev036.wav"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ivr.app.cli", "transcribe", "--json", "--cache-dir", str(model_cache), str(wav)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()
    (cli,) = [json.loads(line) for line in out.decode().splitlines()]

    svc = Service(
        AppConfig(recognizer={"engine": {"cache_dir": model_cache}}, prompts={"cache_dir": model_cache / "prompts"})
    )
    auth = AdminAuth({"tests": API_TOKEN}, {"tests": ["recognize"]})
    async with TestClient(TestServer(build_app(svc, auth=auth))) as client:
        await asyncio.wait_for(svc.ready.wait(), 120)
        resp = await client.post("/v1/recognize", data=wav.read_bytes(), headers=API_AUTH)
        assert resp.status == 200
        http = await resp.json()
    assert cli["text"] and http["text"] == cli["text"]
    assert " ".join(s["text"] for s in http["segments"]) == cli["text"]
