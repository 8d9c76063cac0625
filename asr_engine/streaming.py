"""Streaming recognition in the shape of sherpa-onnx: streams take audio as it arrives, the VAD
cuts utterances, and one call decodes the finished utterances of many streams in one batch.

    rec = StreamingRecognizer(Recognizer(config))
    s = rec.create_stream()
    s.accept_waveform(8000, samples)          # any rate; events tell when speech starts/ends
    if rec.is_ready(s):
        rec.decode_streams([s, ...])          # batched across streams
        for r in s.get_results(): ...
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from .audio.resample import Resampler
from .decoding.bias import Biaser
from .recognizer import Recognizer, Transcript, Utterance
from .vad import RATE, Endpointer, SileroVad, SpeechEnd, SpeechStart, VadConfig, VadEvent, VadState


@dataclass
class SegmentResult:
    text: str
    tokens: list[int]
    start: float  # seconds since the stream began
    end: float
    confidence: float
    truncated: bool
    transcript: Transcript


class RecognitionStream:
    """One caller's audio, fed from one thread and read from another.

    `accept_waveform`, `feed`, `judge` and `input_finished` run the VAD: call them from one thread only (a call's VAD
    work runs in the service's VAD thread). `set_context`, `take_utterances` and `in_speech` may be
    called from another thread (the event loop): what both sides touch is behind a lock, held only
    for the hand-over, never while the VAD runs.
    """

    def __init__(self, vad: SileroVad, vad_config: VadConfig) -> None:
        self.config = vad_config  # the defaults; a turn may set its own end silence and pause
        self._endpointer = Endpointer(vad, vad_config)
        self._resamplers: dict[int, Resampler] = {}
        self._lock = threading.Lock()
        self._pending: deque[SpeechEnd] = deque()  # guarded by _lock
        self._context: tuple[Biaser | None, str] = (None, "")  # guarded by _lock
        self._results: list[SegmentResult] = []

    def set_context(self, biaser: Biaser | None, prompt: str = "") -> None:
        """Hot words and previous-text prompt for the utterances taken from now on."""
        with self._lock:
            self._context = (biaser, prompt)

    @property
    def in_speech(self) -> bool:
        return self._endpointer.in_speech  # one flag the feeding thread sets: read as it stands

    def set_end_silence(self, ms: int, pause_ms: int | None = None) -> None:
        """The silence that ends an utterance from now on, and the pause after which the utterance so
        far is reported (SpeechPause); call from the thread that feeds the stream."""
        self._endpointer.set_min_silence(ms)
        self._endpointer.set_pause(pause_ms)

    @property
    def voiced_end(self) -> float:
        """Seconds since the stream began to the end of the last voiced audio."""
        return self._endpointer.voiced_end

    @property
    def onset_voiced(self) -> float:
        """Seconds of voiced audio since a possible onset the VAD has not confirmed as speech (0: none)."""
        return self._endpointer.onset_voiced

    def utterance(self, samples: np.ndarray) -> Utterance:
        """16 kHz audio of this stream as an utterance, with the hot words and prompt now set."""
        with self._lock:
            biaser, prompt = self._context
        return Utterance(samples, RATE, biaser.start() if biaser else None, prompt)

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> list[VadEvent]:
        """Feed audio (float in [-1, 1] or int16). Returns the VAD events it caused."""
        return self._queue(list(self._endpointer.accept(self._at_rate(sample_rate, samples))))

    def feed(self, sample_rate: int, samples: np.ndarray) -> None:
        """Feed audio as `accept_waveform` does, without judging it: a `VadBatcher` judges it
        (`next_chunk`, `judge`) in one inference with other streams' audio."""
        self._endpointer.push(self._at_rate(sample_rate, samples))

    def next_chunk(self) -> tuple[VadState, np.ndarray] | None:
        return self._endpointer.next_chunk()

    def judge(self, p: float) -> list[VadEvent]:
        return self._queue(self._endpointer.judge(p))

    def _at_rate(self, sample_rate: int, samples: np.ndarray) -> np.ndarray:
        """The audio as 16 kHz float32."""
        x = np.asarray(samples)
        x = x.astype(np.float32) / 32768 if x.dtype == np.int16 else x.astype(np.float32)
        if sample_rate != RATE:
            if sample_rate not in self._resamplers:
                self._resamplers[sample_rate] = Resampler(sample_rate, RATE)
            x = self._resamplers[sample_rate].process(x)
        return x

    def input_finished(self) -> list[VadEvent]:
        return self._queue(list(self._endpointer.flush()))

    def _queue(self, events: list[VadEvent]) -> list[VadEvent]:
        ends = [e for e in events if isinstance(e, SpeechEnd)]
        if ends:
            with self._lock:
                self._pending.extend(ends)
        return events

    def take_utterances(self) -> list[tuple[SpeechEnd, Utterance]]:
        """The utterances that ended since the last call, each once, with the context now set."""
        with self._lock:
            segments = list(self._pending)
            self._pending.clear()
            biaser, prompt = self._context
        return [(seg, Utterance(seg.samples, RATE, biaser.start() if biaser else None, prompt)) for seg in segments]

    def add_result(self, result: SegmentResult) -> None:
        self._results.append(result)

    def get_results(self) -> list[SegmentResult]:
        """Results decoded so far, oldest first; each is returned once."""
        out, self._results = self._results, []
        return out

    @property
    def has_pending(self) -> bool:
        with self._lock:
            return bool(self._pending)


class StreamingRecognizer:
    def __init__(self, recognizer: Recognizer, vad_config: VadConfig | None = None, vad: SileroVad | None = None):
        self.recognizer = recognizer
        self.vad_config = vad_config or VadConfig()
        self.vad = vad or SileroVad()

    def create_stream(self, vad_config: VadConfig | None = None) -> RecognitionStream:
        return RecognitionStream(self.vad, vad_config or self.vad_config)

    @staticmethod
    def is_ready(stream: RecognitionStream) -> bool:
        return stream.has_pending

    def decode_streams(self, streams: list[RecognitionStream]) -> None:
        """Decode every finished utterance of these streams in one batch."""
        work = [(s, seg, utt) for s in streams for seg, utt in s.take_utterances()]
        if not work:
            return
        transcripts = self.recognizer.recognize([utt for _, _, utt in work])
        for (s, seg, _), t in zip(work, transcripts, strict=True):
            s.add_result(SegmentResult(t.text, t.tokens, seg.start, seg.end, t.confidence, seg.truncated, t.released()))


__all__ = ["RecognitionStream", "SegmentResult", "SpeechEnd", "SpeechStart", "StreamingRecognizer"]
