"""The VAD batched across streams (`VadBatcher`): each stream gets exactly the events it gets when
its audio is judged alone, one inference per chunk, on real recordings fed as calls feed them."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import CHUNK, SileroVad, SpeechEnd, SpeechPause, SpeechStart, VadConfig, VadEvent, VadState
from asr_engine.vad_batch import Finish, VadBatcher

PACKET = 160  # 20 ms at 8 kHz


def _calls(shared: Path, n: int) -> list[np.ndarray]:
    """`n` callers' audio as the line carries it (8 kHz int16): several answers each, with pauses of
    different lengths between them, so that streams start, pause and end speech at different times."""
    clips = [read_wav(str(shared / f"data/callers_dev/dev{i:03d}.wav")) for i in range(1, 13)]
    out = []
    for k in range(n):
        parts = [np.zeros(800 * (k + 1), np.float32)]
        for j in range(3):
            clip = clips[(k * 5 + j * 7) % len(clips)]
            assert clip.sample_rate == 8000
            parts += [clip.samples, np.zeros(2400 + 1600 * ((k + j) % 4), np.float32)]
        out.append((np.concatenate(parts) * 32767).astype(np.int16))
    return out


def _key(e: VadEvent) -> tuple:
    match e:
        case SpeechStart():
            return ("start", e.at)
        case SpeechPause():
            return ("pause", e.voiced_end, e.samples.tobytes())
        case SpeechEnd():
            return ("end", e.start, e.end, e.voiced_end, e.decided_at, e.truncated, e.samples.tobytes())
    raise AssertionError(e)


def _stream(vad: SileroVad) -> RecognitionStream:
    s = RecognitionStream(vad, VadConfig(tail_margin_db=6.0))  # the trailing edge's floor moves on too
    s.set_end_silence(400, 250)  # pauses reported too
    return s


def _alone(vad: SileroVad, audio: np.ndarray) -> list[tuple]:
    s = _stream(vad)
    events = [e for off in range(0, len(audio), PACKET) for e in s.accept_waveform(8000, audio[off : off + PACKET])]
    return [_key(e) for e in events + s.input_finished()]


async def _batched(batcher: VadBatcher, audio: np.ndarray, seed: int) -> list[tuple]:
    s = _stream(batcher.vad)
    rng = random.Random(seed)
    events: list[VadEvent] = []
    off = 0
    while off < len(audio):
        n = PACKET * rng.randint(1, 5)  # a call hands over what arrived since its last pass
        piece, off = audio[off : off + n], off + n
        last = off >= len(audio)

        def feed(piece: np.ndarray = piece, last: bool = last) -> Finish:
            s.feed(8000, piece)
            return s.input_finished if last else list

        events += await batcher.run(s, feed)
        await asyncio.sleep(0)
    return [_key(e) for e in events]


async def test_streams_judged_together_get_the_events_each_gets_alone(
    vad: SileroVad, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _calls(shared, 6)
    expected = [_alone(vad, a) for a in calls]
    assert all(any(k[0] == "end" for k in ev) for ev in expected)
    assert any(k[0] == "pause" for ev in expected for k in ev)

    batcher = VadBatcher(vad, max_batch=4)  # six streams: a round takes two inferences
    rows: list[int] = []
    probabilities = vad.probabilities

    def counted(states: list[VadState], chunks: np.ndarray) -> np.ndarray:
        rows.append(len(states))
        return probabilities(states, chunks)

    monkeypatch.setattr(vad, "probabilities", counted)
    try:
        got = await asyncio.gather(*(_batched(batcher, a, seed) for seed, a in enumerate(calls)))
    finally:
        batcher.close()
    assert got == expected
    assert max(rows) > 1, "no two streams were ever judged in one inference"
    assert max(rows) <= 4


async def test_a_stream_whose_feed_fails_gets_the_error_and_the_others_their_events(
    vad: SileroVad, shared: Path
) -> None:
    audio = _calls(shared, 1)[0]
    batcher = VadBatcher(vad)
    gate = threading.Event()
    good = _stream(vad)

    def blocked() -> Finish:
        gate.wait(10)  # holds the VAD thread so that both jobs below are judged in one pass
        return list

    def bad_feed() -> Finish:
        raise ValueError("no audio")

    def good_feed() -> Finish:
        good.feed(8000, audio)
        return good.input_finished

    try:
        hold = asyncio.ensure_future(batcher.run(_stream(vad), blocked))
        await asyncio.sleep(0.05)
        bad = asyncio.ensure_future(batcher.run(_stream(vad), bad_feed))
        fine = asyncio.ensure_future(batcher.run(good, good_feed))
        await asyncio.sleep(0.05)
        gate.set()
        assert await hold == []
        with pytest.raises(ValueError, match="no audio"):
            await bad
        assert [_key(e) for e in await fine] == _alone(vad, audio)
    finally:
        gate.set()
        batcher.close()


def test_probabilities_refuses_chunks_that_do_not_match_the_states(vad: SileroVad) -> None:
    with pytest.raises(ValueError, match="chunks must be"):
        vad.probabilities([VadState(), VadState()], np.zeros((1, CHUNK), np.float32))
