"""Hot words through recognition: the graph and prompt in the decoder, readings weighed on the audio."""

from __future__ import annotations

import json
from functools import partial

import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.transcribe import transcribe_audio
from hotwords.schema import Entry
from ivr.biasing import Biasing


@pytest.fixture(scope="module")
def callers(shared):
    rows = [json.loads(line) for line in (shared / "data/callers_dev/manifest.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


@pytest.fixture(scope="module")
def biasing(recognizer, callers):
    phrases = sorted({p for r in callers.values() for p in r["hotwords"]})
    return Biasing.from_entries([Entry(phrase=p) for p in phrases], recognizer.tokenizer)


def _run(recognizer, vad, shared, key, biasing=None):
    audio = read_wav(str(shared / f"data/callers_dev/{key}.wav"))
    refine = partial(biasing.refine, recognizer) if biasing else None
    return transcribe_audio(recognizer, vad, audio, biaser=biasing.graph if biasing else None, refine=refine).text


@pytest.mark.parametrize("key", ["dev001", "dev011", "dev016"])
def test_product_names_recognized_only_with_lists(recognizer, vad, shared, callers, biasing, key):
    (phrase,) = callers[key]["hotwords"]
    assert phrase.lower() not in _run(recognizer, vad, shared, key).lower()
    assert phrase.lower() in _run(recognizer, vad, shared, key, biasing).lower()


@pytest.mark.parametrize("key", ["dev033", "dev036", "dev040"])
def test_lists_leave_ordinary_requests_alone(recognizer, vad, shared, biasing, key):
    plain = _run(recognizer, vad, shared, key)
    biased = _run(recognizer, vad, shared, key, biasing)
    assert not any(p.lower() in biased.lower() for p in biasing.graph.phrases)
    assert biased.lower().strip(".") == plain.lower().strip(".")
