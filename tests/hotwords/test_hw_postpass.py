from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hotword_helpers import shared_data

from hotwords.postpass import PhraseCorrector, decoys, loose_total

# Whisper tiny.en (faster-whisper, greedy) transcripts of the callers_dev recordings.
TINY_EN = Path(__file__).parent / "data" / "callers_dev_tiny_en.jsonl"


@pytest.fixture(scope="module")
def data() -> Path:
    return shared_data()


@pytest.fixture(scope="module")
def phrases(data: Path) -> list[str]:
    rows = [json.loads(line) for line in (data / "callers_dev" / "manifest.jsonl").read_text().splitlines()]
    return sorted({phrase for row in rows for phrase in row["hotwords"]})


@pytest.fixture(scope="module")
def corrector(phrases: list[str]) -> PhraseCorrector:
    return PhraseCorrector(phrases)


def test_the_loaded_list(phrases: list[str]) -> None:
    assert len(phrases) == 6 and "Zentrix Unlimited" in phrases


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        (
            "I want to upgrade to the Zen tricks Unlimited plan",
            "I want to upgrade to the Zentrix Unlimited plan",
        ),
        ("My zen tricks and limited keeps dropping", "My Zentrix Unlimited keeps dropping"),
        ("I want to upgrade to the Kistravi-Rooter plan.", "I want to upgrade to the Kestrava router plan."),
        ("cancel my Velmont fiber subscription", "cancel my Velmont Fiber subscription"),
        ("Please add quippy tail roaming to my account.", "Please add Qubitel roaming to my account."),
    ],
)
def test_sound_alikes_are_replaced(corrector: PhraseCorrector, heard: str, expected: str) -> None:
    text, hits = corrector.correct(heard)
    assert text == expected
    assert len(hits) == 1 and heard[hits[0].start : hits[0].end] == hits[0].heard


def test_ordinary_sentences_are_left_alone(corrector: PhraseCorrector, data: Path) -> None:
    prompts = [line.split("\t", 1)[1].strip() for line in (data / "asterisk_dev.tsv").read_text().splitlines()]
    rows = [json.loads(line) for line in TINY_EN.read_text().splitlines()]
    ordinary = prompts + [row["hypothesis"] for row in rows if not row["hotwords"]]
    assert len(ordinary) > 250
    changed = [(text, corrector.correct(text)[0]) for text in ordinary if corrector.correct(text)[0] != text]
    assert changed == []


def test_real_tiny_en_transcripts(corrector: PhraseCorrector) -> None:
    rows = [json.loads(line) for line in TINY_EN.read_text().splitlines() if json.loads(line)["hotwords"]]
    before = sum(row["hotwords"][0] in row["hypothesis"] for row in rows)
    after = 0
    for row in rows:
        text, hits = corrector.correct(row["hypothesis"])
        assert {hit.phrase for hit in hits} <= set(row["hotwords"])  # never the wrong phrase
        after += row["hotwords"][0] in text
    print(f"hot phrase spelled right: {before}/{len(rows)} raw, {after}/{len(rows)} after the post-pass")
    assert after >= before + 4


def test_case_and_punctuation_are_kept_outside_the_span(corrector: PhraseCorrector) -> None:
    text, hits = corrector.correct("Zen tricks Unlimited, please.")
    assert text == "Zentrix Unlimited, please."
    assert (hits[0].start, hits[0].end) == (0, 20)
    assert PhraseCorrector([]).correct("anything at all") == ("anything at all", [])


def test_readings_never_cut_into_a_phrase_already_heard(corrector: PhraseCorrector) -> None:
    """Once the decoder has written a phrase, the post-pass may not trade it (or the words beside it)
    for another guess: no reading drops "add" or repeats part of the phrase."""
    heard = "Please add Kestrava router to my account"
    assert corrector.correct(heard)[0] == heard
    for reading in corrector.alternatives(heard, limit=20, min_total=60.0):
        assert "Please add Kestrava router" in reading, reading


def test_the_loose_bar_rises_with_the_catalogue(phrases: list[str]) -> None:
    """Among 1,000 names a faint look-alike is no longer offered for weighing; a close one still is."""
    syllables = ["ka", "lo", "ve", "tri", "zen", "mor", "qui", "bel", "dra", "nix"]
    names = [f"{a}{b}{c}".capitalize() + " plan" for a, b, c in itertools.product(syllables, repeat=3)]
    small, big = PhraseCorrector(phrases), PhraseCorrector(names + phrases)
    assert loose_total(len(phrases)) == loose_total(10) == 100.0
    assert loose_total(1000) == pytest.approx(134.0)
    faint = "My yellow family bill is wrong."
    assert "My Orbilo Family bill is wrong." in small.alternatives(faint)
    assert big.alternatives(faint) == []
    close = "I'd like the Bellmont Fiber upgrade."
    assert big.alternatives(close)[0] == small.alternatives(close)[0] == "I'd like the Velmont Fiber upgrade."


def test_named_phrases_whatever_the_spelling(corrector: PhraseCorrector) -> None:
    heard = "my nova pay Wallet and Zentrix-Unlimited, please"
    assert corrector.named(heard) == {"NovaPay wallet", "Zentrix Unlimited"}
    assert corrector.named("my Zentrix plan") == set()
    assert corrector.spelled("Qubitel roaming") and not corrector.spelled("roaming")


@pytest.mark.parametrize(
    ("text", "into", "expected"),
    [
        # Only the words around the phrase move over: the other reading keeps its own "twice"/"vice".
        (
            "Why was I charged twice for Zentrix Unlimited this month?",
            "Why was I charged vice for the entrance in limited this month.",
            "Why was I charged vice for Zentrix Unlimited this month.",
        ),
        # Words both read alike (whatever their case) are taken over only where they are the phrase.
        ("My Zentrix Unlimited keeps", "my zentrix and limited keeps.", "my Zentrix Unlimited keeps."),
        # A phrase that swallowed a word the other reading has takes that word away with it.
        (
            "Myxora hotspot, dropping the connection",
            "My Skyroom River keeps dropping the connection.",
            "Myxora hotspot dropping the connection.",
        ),
        ("I once done Myxora hotspot", "I once done", "I once done Myxora hotspot"),
        ("Myxora hotspot plan", "plan", "Myxora hotspot plan"),
        ("no phrase here", "nothing at all", "nothing at all"),
    ],
)
def test_transplant_moves_only_the_phrases(text: str, into: str, expected: str) -> None:
    corrector = PhraseCorrector(["Zentrix Unlimited", "Myxora hotspot"])
    assert corrector.transplant(text, into) == expected


def test_decoys_are_made_up_names_of_the_same_shape() -> None:
    made = decoys("Myxora hotspot")
    assert made == decoys("Myxora hotspot") and len(set(made)) == 8  # the same ones every time
    assert all(name.endswith(" hotspot") and name != "Myxora hotspot" for name in made)
    assert all(len(name.split()) == 1 for name in decoys("Quenzo", 3))


def test_swap_writes_another_name_where_a_phrase_is_spelled(corrector: PhraseCorrector) -> None:
    assert corrector.swap("my nova pay wallet, please", "NovaPay wallet", "Solru wallet") == "my Solru wallet, please"
    assert corrector.swap("my Zentrix Unlimited", "NovaPay wallet", "Solru wallet") == "my Zentrix Unlimited"


def test_transplant_leaves_out_the_phrases_not_asked_for() -> None:
    corrector = PhraseCorrector(["Venquor Max", "Sabrelo music"])
    plain = "Then, can we make a sense of being done in here today?"
    both = "Venquor Max, Sabrelo music,"
    assert corrector.transplant(both, plain) == "Venquor Max, Sabrelo music?"
    assert corrector.transplant(both, plain, {"Venquor Max"}) == "Venquor Max?"
    text, into = "I have Sabrelo music and Venquor Max here", "I have sable music and when core max here"
    assert corrector.transplant(text, into, {"Venquor Max"}) == "I have sable music and Venquor Max here"
    assert corrector.transplant(text, into, set()) == into
