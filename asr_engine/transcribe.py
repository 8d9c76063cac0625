"""Transcribing whole recordings: `transcribe_audio` for the `transcribe` command, and the same steps
from an event loop through the batching recognizer (`transcribe_audio_batched`, `/v1/recognize`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .audio.wav import Audio
from .batcher import BatchingRecognizer, Priority
from .decoding.bias import Biaser
from .recognizer import Recognizer, Refine, Transcript, Utterance
from .segmenter import Chunk, speech_chunks
from .vad import RATE, SileroVad


@dataclass
class Segment:
    start: float
    end: float
    text: str
    confidence: float


@dataclass
class RecordingResult:
    text: str
    segments: list[Segment]
    seconds: float  # wall time spent on this recording


def utterances(chunks: list[Chunk], biaser: Biaser | None, prompt: str = "") -> list[Utterance]:
    return [Utterance(c.samples, RATE, biaser.start() if biaser else None, prompt) for c in chunks]


def assemble(chunks: list[Chunk], transcripts: list[Transcript], started: float) -> RecordingResult:
    segs = [
        Segment(round(c.start, 3), round(c.end, 3), t.text, round(t.confidence, 4))
        for c, t in zip(chunks, transcripts, strict=True)
        if t.text
    ]
    return RecordingResult(" ".join(s.text for s in segs), segs, time.perf_counter() - started)


def transcribe_audio(
    recognizer: Recognizer,
    vad: SileroVad,
    audio: Audio,
    biaser: Biaser | None = None,
    prompt: str = "",
    refine: Refine | None = None,
) -> RecordingResult:
    """Decode in this thread. `refine(utterance, transcript)` may rewrite each chunk's transcript (e.g.
    a hot-word post-pass: `Recognizer.refined`)."""
    t0 = time.perf_counter()
    chunks = speech_chunks(audio.samples, audio.sample_rate, vad)
    utts = utterances(chunks, biaser, prompt)
    transcripts = recognizer.recognize(utts) if utts else []
    if refine is not None:
        transcripts = [recognizer.refined(refine, u, t) for u, t in zip(utts, transcripts, strict=True)]
    return assemble(chunks, transcripts, t0)


async def transcribe_audio_batched(
    batcher: BatchingRecognizer,
    vad: SileroVad,
    audio: Audio,
    biaser: Biaser | None = None,
    prompt: str = "",
    refine: Refine | None = None,
    priority: Priority = Priority.UPLOAD,
) -> RecordingResult:
    """`transcribe_audio` for a caller on an event loop: the VAD runs in a thread, the chunks are decoded
    (and refined) by `batcher`'s worker along with everyone else's utterances, at `priority`. Raises
    `RecognizerOverloaded` (or its `RecognizerBusy`) when the batcher sheds them."""
    t0 = time.perf_counter()
    chunks = await asyncio.to_thread(speech_chunks, audio.samples, audio.sample_rate, vad)
    utts = utterances(chunks, biaser, prompt)
    transcripts = await batcher.transcribe_all(utts, refine, priority)
    return assemble(chunks, transcripts, t0)
