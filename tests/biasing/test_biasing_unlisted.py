"""Callers naming a product that is not on the list (validation callers of `bench/make_callers.py`,
rendered here): neither a call's biased decode nor a recording's readings may write a listed name for
it, and a caller naming a listed product still gets it, even beside a listed name written but not
said (a tuning caller)."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import pytest

from asr_engine.audio.wav import read_wav
from asr_engine.transcribe import transcribe_audio
from bench.make_callers import TUNING, VALIDATION, manifest
from hotwords.schema import Entry
from ivr.app.biasing import Biasing

# "my Skyrune router keeps dropping the connection" (the reported call: it came out as "Myxora
# hotspot, dropping the connection") and "please stop renewing Skyrune hotspot for me": without the
# check against the unbiased reading, both a call's turn and a recording wrote the listed "Myxora
# hotspot" for them.
UNLISTED = ["val025", "val037"]
NAMED = ["val004", "val014"]  # "... move Myxora hotspot to my new address", "... renewing Quenzo TV for me"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("callers_val")
    rows = manifest(VALIDATION, out, ids={*UNLISTED, *NAMED})
    return {r["id"]: (r, read_wav(str(out / f"{r['id']}.wav"))) for r in rows}


@pytest.fixture(scope="module")
def biasing(recognizer):
    return Biasing.from_entries([Entry(phrase=p) for p in VALIDATION.listed], recognizer.tokenizer)


def _hear(recognizer, vad, audio, biasing: Biasing, mode: str) -> str:
    graph = biasing.graph
    if mode == "call":  # one decode with the graph and the phrases as prompt, readings weighed, names checked
        weigh = partial(replace(biasing, gate_calls=True).weigh, recognizer)
        return transcribe_audio(recognizer, vad, audio, biaser=graph, prompt=graph.prompt, refine=weigh).text
    return transcribe_audio(recognizer, vad, audio, biaser=graph, refine=partial(biasing.refine, recognizer)).text


def _listed(text: str) -> list[str]:
    return [p for p in VALIDATION.listed if p.lower() in text.lower()]


@pytest.mark.parametrize("mode", ["call", "recording"])
@pytest.mark.parametrize("key", UNLISTED)
def test_an_unlisted_product_is_not_rewritten_to_a_listed_one(recognizer, vad, clips, biasing, key, mode):
    row, audio = clips[key]
    assert row["kind"] == "unlisted" and row["hotwords"] == []
    ungated = _hear(recognizer, vad, audio, replace(biasing, plain_margin=math.inf, decoys=0), mode)
    assert _listed(ungated), ungated  # what the check is for: the biased decode wrote a listed name
    heard = _hear(recognizer, vad, audio, biasing, mode)
    assert _listed(heard) == [], heard


@pytest.mark.parametrize("mode", ["call", "recording"])
@pytest.mark.parametrize("key", NAMED)
def test_a_listed_product_still_is(recognizer, vad, clips, biasing, key, mode):
    row, audio = clips[key]
    assert _listed(_hear(recognizer, vad, audio, biasing, mode)) == row["hotwords"]


@pytest.mark.parametrize("mode", ["call", "recording"])
def test_each_name_stands_or_falls_alone(recognizer, vad, tmp_path, mode):
    """A tuning caller's "Venquor Max has been down since yesterday" comes out of the biased decode as
    "Venquor Max, Sabrelo music": the unsaid name fails the check, the said one stays."""
    (row,) = manifest(TUNING, tmp_path, ids={"tun002"})
    audio = read_wav(str(tmp_path / "tun002.wav"))
    biasing = Biasing.from_entries([Entry(phrase=p) for p in TUNING.listed], recognizer.tokenizer)
    ungated = _hear(recognizer, vad, audio, replace(biasing, plain_margin=math.inf, decoys=0), mode)
    assert "Sabrelo music" in ungated, ungated  # what the case is for: an unsaid name beside the said one
    heard = _hear(recognizer, vad, audio, biasing, mode)
    assert [p for p in TUNING.listed if p.lower() in heard.lower()] == row["hotwords"] == ["Venquor Max"], heard
