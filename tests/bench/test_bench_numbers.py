"""The scoring normalizer: numbers written any way score the same, and nothing else is repaired."""

from __future__ import annotations

import gzip
import re

import pytest

from bench.common import ASTERISK_TRANSCRIPTS, asterisk_reference, normalize, scoring_form, wer

SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9}


@pytest.mark.parametrize(
    ("said", "written"),
    [
        ("twelve", "12"),
        ("one two", "12"),
        ("one two", "1 2"),
        ("fifteenth", "15th"),
        ("twenty first", "21st"),
        ("second", "2nd"),
        ("third", "3rd"),
        ("twentieth", "20th"),
        ("twenty one", "21"),
        ("twenty-one", "two one"),
        ("two thousand five hundred", "2,500"),
        ("twenty five hundred", "2500"),
        ("one hundred and five", "105"),
        ("a hundred", "100"),
        ("hundredth", "100th"),
        ("one million", "1,000,000"),
        ("five million", "5 million"),
        ("nineteen ninety", "1990"),
        ("five oh one", "501"),
        ("oh five", "05"),
        ("double five", "55"),
        ("double oh seven", "007"),
        ("twenty eight point eight", "28.8"),
        ("four seven one nine two two", "471-922"),
        ("four seven one nine two two", "47 19 22"),
        ("five five zero one three eight", "5.5.0.1.3.8."),
        ("version one point five", "version 1.5."),
        ("twelve thirty four", "1234"),
        ("press one two or three", "Press 1, 2 or 3."),
        ("fifty percent", "50%"),
        ("three d audio", "3D audio"),
    ],
)
def test_a_number_scores_the_same_however_it_is_written(said, written):
    assert scoring_form(said) == scoring_form(written)
    assert wer([said], [written]) == 0.0


@pytest.mark.parametrize(
    ("ref", "hyp"),
    [
        ("twelve", "twenty"),
        ("fifteenth", "fifteen"),  # an ordinal is not its cardinal
        ("twenty one", "21st"),
        ("one hundred", "one thousand"),
        ("thirty", "thirteen"),
        ("oh no", "0 no"),  # "oh" is zero only among digits
        ("hundreds of calls", "100 of calls"),
        ("press two", "press to"),  # homophones stay words: scoring does not repair hearing
        ("press four", "press for"),
        ("a hundred", "100 100"),
    ],
)
def test_different_numbers_stay_different(ref, hyp):
    assert scoring_form(ref) != scoring_form(hyp)
    assert wer([ref], [hyp]) > 0


def test_a_number_weighs_its_digits_and_its_trailing_zeros_one():
    assert scoring_form("my pin is 4719") == "my pin is 4 7 1 9"
    assert scoring_form("press one and two") == "press 1 and 2"  # "and" joins only what a scale adds to
    assert scoring_form("two thousand and five") == "2 0 0 5"
    assert scoring_form("a million") == scoring_form("million") == "1 000000"
    assert scoring_form("zero") == "0" and scoring_form("0 0") == "0 0"
    assert scoring_form("first name") == "1 th name"
    # One digit wrong in six said one by one is one error in six, not one in one.
    assert wer(["four seven one nine two two"], ["471-923"]) == pytest.approx(100 / 6)
    assert wer(["million"], ["billion"]) == pytest.approx(50.0)


def test_words_other_than_numbers_are_normalized_as_before():
    assert scoring_form("I can't hear you, it's 'quiet'.") == normalize("I can't hear you, it's 'quiet'.")
    assert scoring_form("oh o'clock a lot and more") == "oh o'clock a lot and more"


def test_digits_spelled_one_by_one_score_as_the_numeral():
    for numeral in ("500", "1234", "8500", "007", "10", "2026"):
        assert scoring_form(normalize(numeral)) == scoring_form(numeral)


def test_heldout_references_keep_plain_numerals_and_drop_names():
    assert asterisk_reference("Dial 500 now.") == "dial five zero zero now"
    assert asterisk_reference("a 28.8 kilobit modem") == "a two eight point eight kilobit modem"
    assert asterisk_reference("H.323") is None
    assert asterisk_reference("(10 seconds of silence)") is None
    assert asterisk_reference("fourtieth") == "fortieth"  # the transcript's misspelling


def test_dev_references_are_what_the_heldout_builder_writes(shared):
    rows = [line.split("\t") for line in (shared / "data/asterisk_dev.tsv").read_text().splitlines()]
    assert [asterisk_reference(ref) for _, ref in rows] == [ref for _, ref in rows]


def test_asterisk_number_prompts_score_as_their_numerals():
    # scripts/setup.sh installs the transcripts: without them this check would silently not run.
    assert ASTERISK_TRANSCRIPTS.exists(), "asterisk-core-sounds-en is not installed: run scripts/setup.sh"
    lines = gzip.decompress(ASTERISK_TRANSCRIPTS.read_bytes()).decode().splitlines()
    prompts = {k.strip(): t for k, _, t in (line.partition(":") for line in lines)}
    checked = 0
    for key, text in prompts.items():
        if m := re.fullmatch(r"digits/(h-)?(\d+|hundred|thousand|million|billion)", key):
            ordinal, number = m.groups()
            numeral = str(SCALES.get(number) or number)
            ref = asterisk_reference(text)
            assert ref is not None, key
            assert scoring_form(ref) == scoring_form(numeral + ("th" if ordinal else "")), (key, text)
            checked += 1
    assert checked >= 50
