"""Silero VAD (ONNX, shipped in the `silero-vad` package) and the endpointer built on it.

The endpointer turns 32 ms speech probabilities into events: speech start once speech has lasted
long enough to be more than a cough or a click (barge-in uses this), a pause (when asked for) with
the audio so far, so that a turn that is already complete can end before its silence runs out, and
speech end after enough silence or at the utterance length limit.

Silero is slow to trust a soft onset: on a short first word ("please", "third") it stays near the
threshold for a chunk or two, then dips during the pause that follows. So before speech is confirmed,
a dip shorter than the silence that would end an utterance keeps the onset where it was and the
speech heard on both sides of it counts together; and more audio is kept before the onset than after
the end.

Silero also keeps scoring a chunk or more as voice after the voice has stopped: once the line is back
to its noise the model's memory of the word is all that is left. So in speech a chunk whose energy is
within `tail_margin_db` of the line's noise floor counts as silence whatever Silero says, and the
speech ends where the voice stops on the line; before speech such a chunk is no onset either (the
tail Silero still scores as voice after an end is not the caller going on). The floor is a low
percentile of the line noise Silero heard as no speech over the last seconds; digital silence is no
line noise and is left out of it.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, Field

RATE = 16000
CHUNK = 512  # samples per VAD decision at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous chunk the model sees
# The noise floor: this percentile of the energy of the last FLOOR_CHUNKS chunks of line noise heard
# as no speech (~3 s), once there are MIN_FLOOR_CHUNKS of them (~0.25 s). Chunks under FLOOR_MIN_DB are
# digital silence (a phone or sipp sending zeros between utterances), not the line's noise: they are
# left out, and a line with no noise yet has its floor there.
FLOOR_PERCENTILE = 10
FLOOR_CHUNKS = 94
MIN_FLOOR_CHUNKS = 8
FLOOR_MIN_DB = -60.0


class VadConfig(BaseModel):
    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability that starts speech")
    neg_threshold: float = Field(0.35, gt=0, lt=1, description="probability below which speech is paused")
    min_speech_ms: int = Field(250, ge=32, description="speech shorter than this (a cough, a click) is ignored")
    min_silence_ms: int = Field(600, ge=64, description="silence that ends an utterance")
    preroll_ms: int = Field(400, ge=0, description="audio kept before the speech")
    speech_pad_ms: int = Field(200, ge=0, description="audio kept after the speech")
    max_utterance_s: float = Field(20.0, gt=1, le=30, description="longer speech is cut here")
    # Chosen on the tuning halves (bench/endpointing.py at the 250 ms early pause): 6 dB ends callers_dev
    # turns ~100 ms sooner with no cut there and two more on asterisk_dev (none acted on); 8-10 dB cut more.
    tail_margin_db: float | None = Field(
        6.0,
        ge=0,
        le=40,
        description="in speech, a chunk less than this far above the line's noise floor (dB) is silence even "
        "if the VAD still scores it as voice, so the speech ends where the voice stops; none: the VAD alone",
    )
    # Chosen on the tuning halves of callers_dev and asterisk_dev (bench/endpointing.py): 250 ms
    # decodes fewer pauses inside utterances than 200 ms and none of them was one the menu acts on.
    early_end_ms: int | None = Field(
        250, ge=64, le=5000, description="calls: decode a turn after this pause; end it there if the dialog acts on it"
    )
    hold_ms: int | None = Field(
        1100,
        ge=64,
        le=5000,
        description="calls: silence a turn waits for when its decode at the pause is no answer yet (a re-prompt, "
        "a number short of its digits, words that trail off: 'about', 'my', 'and', 'uh'); none: no hold",
    )
    barge_in_ms: int = Field(
        160,
        ge=32,
        le=1000,
        description="calls: voiced audio over a prompt that pauses it, before the VAD confirms speech "
        "(min_speech_ms); a sound that stops short of speech resumes the prompt",
    )
    backchannel_ms: int = Field(
        700,
        ge=0,
        le=3000,
        description="calls: speech over a prompt pauses it; voiced speech this long stops it, shorter speech "
        "resumes it unless its transcript is a request the dialog acts on (a backchannel 'uh-huh', 'okay', a "
        "cough, noise); 0: any speech stops it",
    )


def model_path() -> Path:
    """The model file, found without importing `silero_vad`: its package imports PyTorch, which the
    runtime image does not have."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


class SileroVad:
    """One shared ONNX session; per-stream recurrent state lives in `VadState`."""

    def __init__(self, threads: int = 1) -> None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path()), so, providers=["CPUExecutionProvider"])
        self._sr = np.array(RATE, dtype=np.int64)
        self._lock = threading.Lock()

    def probability(self, state: VadState, chunk: np.ndarray) -> float:
        x = np.concatenate([state.context, chunk])[None].astype(np.float32)
        with self._lock:
            out, state.rnn = self.session.run(None, {"input": x, "state": state.rnn, "sr": self._sr})
        state.context = chunk[-CONTEXT:]
        return float(out[0, 0])

    def probabilities(self, states: Sequence[VadState], chunks: np.ndarray) -> np.ndarray:
        """One inference for many streams: `chunks` is [len(states), CHUNK], one chunk per stream;
        each state moves on as `probability` would move it."""
        if chunks.shape != (len(states), CHUNK):
            raise ValueError(f"chunks must be [{len(states)}, {CHUNK}], got {list(chunks.shape)}")
        x = np.concatenate([np.stack([s.context for s in states]), chunks], axis=1).astype(np.float32)
        rnn = np.concatenate([s.rnn for s in states], axis=1)
        with self._lock:
            out, rnn = self.session.run(None, {"input": x, "state": rnn, "sr": self._sr})
        for i, state in enumerate(states):
            state.rnn = np.ascontiguousarray(rnn[:, i : i + 1])
            state.context = chunks[i, -CONTEXT:].copy()
        return out[:, 0].astype(np.float64)


class VadState:
    def __init__(self) -> None:
        self.rnn = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)


@dataclass(frozen=True)
class SpeechStart:
    at: float  # seconds since the stream began, where the speech began


@dataclass(frozen=True)
class SpeechEnd:
    start: float
    end: float
    samples: np.ndarray  # 16 kHz float32, from preroll_ms before the start to speech_pad_ms after the end
    truncated: bool  # cut at max_utterance_s
    # Seconds since the stream began: where the last voiced chunk ended, and where the endpointer
    # decided (voiced_end + the silence wait). What the caller waits for starts at voiced_end.
    voiced_end: float
    decided_at: float


@dataclass(frozen=True)
class SpeechPause:
    """The caller has been silent for the pause length mid-utterance (once per pause)."""

    voiced_end: float  # seconds since the stream began: where the last voiced chunk ended
    samples: np.ndarray  # the utterance so far, padded as a SpeechEnd's would be


VadEvent = SpeechStart | SpeechPause | SpeechEnd


class Endpointer:
    """Feeds 16 kHz audio through the VAD and yields speech start/end events."""

    def __init__(self, vad: SileroVad, config: VadConfig) -> None:
        self.vad = vad
        self.cfg = config
        self.state = VadState()
        self._pending = np.zeros(0, dtype=np.float32)  # less than one chunk, not yet judged
        self._waiting: deque[np.ndarray] = deque()  # whole chunks not yet judged
        self._audio: list[np.ndarray] = []  # chunks since _audio_start (pre-roll + speech)
        self._audio_start = 0  # sample index of _audio[0]
        self._pos = 0  # samples judged so far
        self._speech_run = 0  # speech since the onset (before confirmation, across short dips)
        self._silence_run = 0
        self._start: int | None = None  # onset candidate or confirmed start
        self._triggered = False
        self._last_speech_end = 0
        self._pause: int | None = None  # silence after which a SpeechPause is reported
        self._paused = False  # reported for the current pause
        self._quiet: deque[float] = deque(maxlen=FLOOR_CHUNKS)  # dB of the last line noise heard as no speech
        ms = RATE // 1000
        self._min_speech = config.min_speech_ms * ms
        self._min_silence = config.min_silence_ms * ms
        self._pad = config.speech_pad_ms * ms
        self._preroll = config.preroll_ms * ms
        self._max = int(config.max_utterance_s * RATE)

    @property
    def in_speech(self) -> bool:
        return self._triggered

    def set_min_silence(self, ms: int) -> None:
        """The silence that ends the utterances from now on (a turn's grammar sets it); an utterance in
        progress ends by the new value too."""
        self._min_silence = ms * (RATE // 1000)

    def set_pause(self, ms: int | None) -> None:
        """Report a SpeechPause after `ms` of silence mid-utterance (None: no pauses)."""
        self._pause = None if ms is None else ms * (RATE // 1000)

    @property
    def voiced_end(self) -> float:
        """Seconds since the stream began to the end of the last voiced chunk."""
        return self._last_speech_end / RATE

    @property
    def onset_voiced(self) -> float:
        """Seconds of voiced audio heard since a possible onset that is not speech yet (0: none)."""
        return 0.0 if self._triggered or self._start is None else self._speech_run / RATE

    def accept(self, samples: np.ndarray) -> Iterator[VadEvent]:
        """Feed audio and judge it, one inference per chunk."""
        self.push(samples)
        while self._waiting:
            chunk = self._waiting.popleft()
            yield from self._judge(chunk, self.vad.probability(self.state, chunk))

    def push(self, samples: np.ndarray) -> None:
        """Feed audio without judging it: its whole chunks wait for `judge` (a `VadBatcher` judges many
        streams' chunks in one inference)."""
        x = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        n = len(x) // CHUNK * CHUNK
        self._pending = x[n:]
        self._waiting.extend(x[i : i + CHUNK] for i in range(0, n, CHUNK))

    def next_chunk(self) -> tuple[VadState, np.ndarray] | None:
        """The VAD state and the next chunk to judge, or None when no whole chunk waits."""
        return (self.state, self._waiting[0]) if self._waiting else None

    def judge(self, p: float) -> list[VadEvent]:
        """Judge the next waiting chunk by its speech probability (the VAD run on `next_chunk`)."""
        return list(self._judge(self._waiting.popleft(), p))

    def flush(self) -> Iterator[VadEvent]:
        """End of input: close an utterance in progress."""
        if self._triggered:
            yield self._close(self._pos, truncated=False)

    def _at_floor(self, db: float) -> bool:
        """Whether a chunk this loud is line noise: within the margin of the noise floor."""
        margin = self.cfg.tail_margin_db
        if margin is None:
            return False
        floor = FLOOR_MIN_DB
        if len(self._quiet) >= MIN_FLOOR_CHUNKS:
            floor = float(np.percentile(self._quiet, FLOOR_PERCENTILE))
        return db < floor + margin

    def _judge(self, chunk: np.ndarray, p: float) -> Iterator[VadEvent]:
        db = 10 * float(np.log10(np.mean(np.square(chunk, dtype=np.float64)) + 1e-12))
        if p < self.cfg.neg_threshold and db >= FLOOR_MIN_DB:
            self._quiet.append(db)
        begin = self._pos
        self._pos += CHUNK
        self._audio.append(chunk)
        # Line noise is no voice, before speech too: right after an end Silero still scores the tail
        # as voice, which would otherwise look like the caller going on (and hold the answer back).
        at_floor = self._at_floor(db)
        if not self._triggered:
            if p >= self.cfg.threshold and not at_floor:
                if self._start is None:
                    self._start = begin
                self._speech_run += CHUNK
                self._last_speech_end = self._pos
                if self._speech_run >= self._min_speech:
                    self._triggered = True
                    self._silence_run = 0
                    yield SpeechStart(self._start / RATE)
            elif self._start is not None and self._pos - self._last_speech_end >= self._min_silence:
                self._start, self._speech_run = None, 0
            self._trim_preroll()
            return
        if p >= self.cfg.threshold and not at_floor:
            self._silence_run, self._paused = 0, False
            self._last_speech_end = self._pos
        elif p < self.cfg.neg_threshold or at_floor:
            self._silence_run += CHUNK
        assert self._start is not None
        if self._silence_run >= self._min_silence:
            yield self._close(min(self._pos, self._last_speech_end + self._pad), truncated=False)
        elif self._pos - self._start >= self._max:
            yield self._close(self._pos, truncated=True)
        elif self._pause is not None and self._silence_run >= self._pause and not self._paused:
            self._paused = True
            end = min(self._pos, self._last_speech_end + self._pad)
            yield SpeechPause(self._last_speech_end / RATE, self._segment(end))

    def _trim_preroll(self) -> None:
        keep_from = (self._start if self._start is not None else self._pos) - self._preroll
        while self._audio and self._audio_start + CHUNK <= keep_from:
            self._audio.pop(0)
            self._audio_start += CHUNK

    def _segment(self, end: int) -> np.ndarray:
        """The utterance's audio from its padded start to `end`."""
        assert self._start is not None
        begin = max(self._audio_start, self._start - self._preroll)
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.float32)
        return audio[begin - self._audio_start : end - self._audio_start]

    def _close(self, end: int, truncated: bool) -> SpeechEnd:
        assert self._start is not None
        seg = self._segment(end)
        voiced_end = max(self._start, self._last_speech_end)
        event = SpeechEnd(self._start / RATE, end / RATE, seg, truncated, voiced_end / RATE, self._pos / RATE)
        self._triggered, self._start, self._speech_run, self._silence_run = False, None, 0, 0
        self._paused = False
        self._trim_preroll()
        return event
