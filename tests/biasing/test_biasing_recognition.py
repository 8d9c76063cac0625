"""Hot words through recognition: the graph and prompt in the decoder, readings weighed on the audio."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial

import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.transcribe import transcribe_audio
from hotwords.schema import Entry
from ivr.app.biasing import Biasing


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


# dev007 comes out without any sound-alike span ("My arm is open"): only the prompted second decode, tried
# because the first was unsure, finds the name. dev009 ("Please, please") is left out: what its prompted
# decode hears changes with the onnxruntime release that quantizes and runs the int8 model ("...Lord
# Family for my account" on 1.29, "Please, have a great day!" on 1.30-1.32), so it counts in the recall
# figures, not here.
@pytest.mark.parametrize("key", ["dev001", "dev011", "dev016", "dev007"])
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


def test_confident_plain_transcripts_are_not_decoded_again(recognizer, vad, shared, biasing):
    """The prompted second decode is for transcripts that call for it, not a tax on every utterance."""
    original, again = recognizer.redecode, []
    recognizer.redecode = lambda utt, encoding: again.append(utt) or original(utt, encoding)
    try:
        for key in ("dev031", "dev038", "dev040", "dev046"):  # billing, agent, cancel, back: no names
            _run(recognizer, vad, shared, key, biasing)
        assert again == []
        _run(recognizer, vad, shared, "dev002", biasing)  # "My zentrix in limited keeps dropping..."
        # The prompted decode, then the unbiased one that checks the name it wrote (`Biasing._gate`).
        assert [u.prompt for u in again] == [biasing.graph.prompt, ""]
        assert again[1].bias is None
    finally:
        recognizer.redecode = original


def _call_turn(recognizer, vad, shared, key, biasing, refine):
    """A call's turn: one decode with the graph and the phrases as prompt, then `refine`."""
    audio = read_wav(str(shared / f"data/callers_dev/{key}.wav"))
    graph = biasing.graph
    return transcribe_audio(recognizer, vad, audio, biaser=graph, prompt=graph.prompt, refine=refine).text


@pytest.mark.parametrize("key", ["dev016", "dev017"])
def test_call_turns_weigh_readings_without_decoding_again(recognizer, vad, shared, callers, biasing, key):
    """The prompted decode still heard "moment fiber" or "Melbourne cyber"; the strict post-pass leaves
    those, the readings weighed on the audio restore the name, and the caller waits for no second
    decode (with `gate_calls`, only the unbiased one that checks the name)."""
    (phrase,) = callers[key]["hotwords"]
    strict = _call_turn(recognizer, vad, shared, key, biasing, lambda _utt, t: biasing.correct(t.text))
    assert phrase.lower() not in strict.lower()
    original, again = recognizer.redecode, []
    recognizer.redecode = lambda utt, encoding: again.append(utt) or original(utt, encoding)
    try:
        weighed = _call_turn(recognizer, vad, shared, key, biasing, partial(biasing.weigh, recognizer))
        assert again == []
        gated = replace(biasing, gate_calls=True)
        checked = _call_turn(recognizer, vad, shared, key, gated, partial(gated.weigh, recognizer))
    finally:
        recognizer.redecode = original
    assert phrase.lower() in weighed.lower() and phrase.lower() in checked.lower()
    assert [(u.prompt, u.bias) for u in again] == [("", None)]


@pytest.mark.parametrize("key", ["dev033", "dev036", "dev040"])
def test_call_turns_leave_ordinary_requests_alone(recognizer, vad, shared, biasing, key):
    weighed = _call_turn(recognizer, vad, shared, key, biasing, partial(biasing.weigh, recognizer))
    assert not any(p.lower() in weighed.lower() for p in biasing.graph.phrases)
