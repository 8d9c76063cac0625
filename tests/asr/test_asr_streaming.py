"""A `RecognitionStream` fed by one thread (the VAD thread) while another (the event loop) takes its
utterances and changes its context: nothing is lost, nothing comes twice, and each utterance gets the
context in force when it was taken."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from asr_engine.audio.wav import read_wav
from asr_engine.streaming import RecognitionStream
from asr_engine.vad import SileroVad, VadConfig


class _Marker:
    """Stands in for a `Biaser`: its `start()` names which context it belongs to."""

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self) -> int:
        return self.n


def _calls_audio(shared: Path) -> np.ndarray:
    """Ten callers' answers one after the other with a second of silence between, as 8 kHz int16."""
    parts = []
    for i in (31, 36, 40, 31, 36, 40, 31, 36, 40, 31):
        clip = read_wav(str(shared / f"data/callers_dev/dev0{i}.wav"))
        assert clip.sample_rate == 8000
        parts += [clip.samples, np.zeros(8000, np.float32)]
    return (np.concatenate(parts) * 32767).astype(np.int16)


def _feed(stream: RecognitionStream, audio: np.ndarray) -> None:
    for off in range(0, len(audio), 160):  # 20 ms packets
        stream.accept_waveform(8000, audio[off : off + 160])
    stream.input_finished()


def test_one_thread_feeds_while_another_takes(vad: SileroVad, shared: Path) -> None:
    audio = _calls_audio(shared)
    config = VadConfig(min_silence_ms=300)

    reference = RecognitionStream(vad, config)
    _feed(reference, audio)
    expected = [(seg.start, seg.end, len(utt.samples)) for seg, utt in reference.take_utterances()]
    assert len(expected) >= 10

    stream = RecognitionStream(vad, config)
    taken: list = []
    done = threading.Event()

    def take() -> None:
        n = 0
        while not done.is_set() or stream.has_pending:
            n += 1
            stream.set_context(_Marker(n), f"context {n}")  # type: ignore[arg-type]
            taken.extend(stream.take_utterances())
            _ = stream.in_speech

    taker = threading.Thread(target=take)
    taker.start()
    try:
        _feed(stream, audio)
    finally:
        done.set()
        taker.join(30)
    assert not taker.is_alive()
    taken += stream.take_utterances()

    got = [(seg.start, seg.end, len(utt.samples)) for seg, utt in taken]
    assert got == expected  # same utterances, in order, none lost or doubled
    assert sum(n for *_, n in got) == sum(n for *_, n in expected)
    for seg, utt in taken:
        assert utt.samples is seg.samples
        assert utt.prompt == f"context {utt.bias}"  # biaser and prompt of one and the same context
