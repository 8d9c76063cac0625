"""The endpointer's trailing edge: in speech, a chunk back at the line's noise floor is silence even
while Silero still scores it as voice (`VadConfig.tail_margin_db`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asr_engine.audio.resample import resample_int16
from asr_engine.audio.wav import read_wav
from asr_engine.vad import CHUNK, RATE, Endpointer, SileroVad, SpeechEnd, SpeechStart, VadConfig, VadEvent

MARGIN_DB = 6.0  # the margin chosen on the tuning halves


def _db(x: np.ndarray) -> np.ndarray:
    """Each whole chunk's energy, dBFS."""
    n = len(x) // CHUNK
    return 10 * np.log10(np.mean(np.square(x[: n * CHUNK].reshape(n, CHUNK), dtype=np.float64), axis=1) + 1e-12)


def _as_line_carries(shared: Path, key: str, tail_s: float, digital_silence: bool) -> np.ndarray:
    """Half a second of digital silence (sipp sends zeros until its audio starts), a caller's request
    (8 kHz, with the telephone channel's line noise) at the VAD's rate, then `tail_s` of line noise at
    the level of the clip's quietest chunks, or of digital silence."""
    clip = read_wav(str(shared / f"data/callers_dev/{key}.wav"))
    pcm = resample_int16((np.asarray(clip.samples) * 32767).astype(np.int16), clip.sample_rate, RATE)
    x = pcm.astype(np.float32) / 32768
    noise_rms = 10 ** (np.percentile(_db(x), 5) / 20)  # before the zeros: the line's own noise
    tail = np.zeros(int(tail_s * RATE), np.float32)
    if not digital_silence:
        tail = np.random.default_rng(7).normal(0, noise_rms, len(tail)).astype(np.float32)
    return np.concatenate([np.zeros(RATE // 2, np.float32), x, tail])


def _events(vad: SileroVad, x: np.ndarray, margin: float | None) -> list[VadEvent]:
    return list(Endpointer(vad, VadConfig(tail_margin_db=margin)).accept(x))


def _speech_on_the_line_ends(x: np.ndarray) -> float:
    """Seconds to the end of the last chunk well above the line's noise (20 dB over its quietest)."""
    db = _db(x)
    loud = np.flatnonzero(db > np.percentile(db, 5) + 20)
    return float((loud[-1] + 1) * CHUNK / RATE)


def test_speech_ends_where_the_voice_stops_not_where_silero_lets_go(vad: SileroVad, shared: Path) -> None:
    """Digital silence around the request is no line noise: the floor is the request's own line."""
    for digital_silence in (False, True):
        x = _as_line_carries(shared, "dev002", 1.5, digital_silence)
        off, on = _events(vad, x, None), _events(vad, x, MARGIN_DB)
        assert [e for e in on if isinstance(e, SpeechStart)] == [e for e in off if isinstance(e, SpeechStart)]
        (end_off,) = [e for e in off if isinstance(e, SpeechEnd)]
        (end_on,) = [e for e in on if isinstance(e, SpeechEnd)]
        # Silero holds on for several chunks after this request's last word; the line does not.
        assert end_on.voiced_end <= end_off.voiced_end - 2 * CHUNK / RATE
        # ...and the end is not taken from inside the words.
        assert end_on.voiced_end >= _speech_on_the_line_ends(x[RATE // 2 : -int(1.5 * RATE)]) + 0.5 - CHUNK / RATE
        # The trailing sounds still reach the recognizer: speech_pad_ms of audio after the end.
        assert end_on.end - end_on.voiced_end == pytest.approx(VadConfig().speech_pad_ms / 1000)
        # The turn's silence wait starts there, so the decision comes as much sooner.
        assert end_on.decided_at <= end_off.decided_at - 2 * CHUNK / RATE


def test_the_tail_after_an_end_is_not_the_caller_going_on(vad: SileroVad, shared: Path) -> None:
    """A call waits on voice heard since the turn ended before it answers: the line noise Silero
    still scores as voice after the end must not move `voiced_end`."""
    x = _as_line_carries(shared, "dev002", 1.5, digital_silence=False)
    ep = Endpointer(vad, VadConfig(tail_margin_db=MARGIN_DB))
    ep.set_min_silence(250)
    ends = [e for e in ep.accept(x) if isinstance(e, SpeechEnd)]
    assert len(ends) == 1
    assert ep.voiced_end == ends[0].voiced_end
    assert ep.onset_voiced == 0
