"""Decoding toward a listening node's closed grammar: the digits and yes/no vocabularies."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from asr_engine.audio.wav import Audio, read_wav
from asr_engine.config import DecodeConfig
from asr_engine.decoding.vocabulary import Combined, Vocabulary
from asr_engine.transcribe import transcribe_audio
from bench.digit_sets import RATE, tts_numbers
from dialog.grammars import normalize, parse_digits
from dialog.intents import IntentRecognizer
from ivr.app.biasing import grammar_vocabulary

BOOST = DecodeConfig().grammar_boost


@pytest.fixture(scope="module")
def digits(recognizer) -> Vocabulary:
    vocabulary = grammar_vocabulary(recognizer.tokenizer, "digits", BOOST)
    assert vocabulary is not None
    return vocabulary


def _ids(recognizer, text: str) -> list[int]:
    return recognizer.tokenizer.encode(text)


def test_the_digits_vocabulary_is_numerals_digit_words_separators_and_the_end(recognizer, digits) -> None:
    tok = recognizer.tokenizer
    for text in (" 5", "5", " 42", " five", " Five", "oh", " zero", ",", "-", "."):
        (token,) = _ids(recognizer, text)
        assert digits.table[token] == BOOST, text
    assert digits.table[tok.special.eot] == BOOST
    for text in (" the", "...", " I", "th", " account"):
        (token,) = _ids(recognizer, text)
        assert token not in digits.table, text
    # The boost steers the choice of token only: the hypothesis gets it back, so scores stay the model's.
    state = digits.start()
    (five,) = _ids(recognizer, " 5")
    (the,) = _ids(recognizer, " the")
    assert state.advance(five) == (state, -BOOST) and state.advance(the) == (state, 0.0)
    assert state.prompt_text() == ""


def test_free_speech_and_a_zero_boost_get_no_vocabulary(recognizer) -> None:
    assert grammar_vocabulary(recognizer.tokenizer, "free", BOOST) is None
    assert grammar_vocabulary(recognizer.tokenizer, "digits", 0.0) is None


def test_combined_states_add_boosts_and_corrections(recognizer, digits) -> None:
    (five,) = _ids(recognizer, " 5")
    other = Vocabulary({five: 1.0, 7: 2.0})
    state = Combined((digits, other)).start()
    assert state.boosts()[five] == BOOST + 1.0 and state.boosts()[7] == 2.0
    assert state.advance(five)[1] == -(BOOST + 1.0)


@pytest.mark.skipif(shutil.which("flite") is None or shutil.which("espeak-ng") is None, reason="no TTS voices")
def test_a_spoken_number_decodes_to_its_digits_with_the_grammar(recognizer, vad, digits) -> None:
    # A synthetic voice on a phone line (fixed seed) that tiny.en alone hears as "6 or 0 times 2 1 times 7 times 9".
    number = next(n for n in tts_numbers(20) if n.key == "t018" and len(n.groups) == 1)
    audio = Audio(np.concatenate([number.pcm, np.zeros(RATE // 2, np.int16)]).astype(np.float32) / 32768, RATE)
    alone = transcribe_audio(recognizer, vad, audio).text
    steered = transcribe_audio(recognizer, vad, audio, digits).text
    assert parse_digits(normalize(alone)).digits != number.digits, alone
    assert parse_digits(normalize(steered)).digits == number.digits, steered


@pytest.mark.parametrize(
    ("clip", "grammar", "intent"),
    [
        ("dev044", "digits", "digits"),  # five five five zero one three eight
        ("dev045", "digits", "repeat"),  # can you say that again: a command still comes through
        ("dev046", "digits", "back"),  # go back to the main menu
        ("dev041", "yes_no", "yes"),  # yes that's right
        ("dev042", "yes_no", "no"),  # no that's wrong
    ],
)
def test_answers_of_the_grammar_and_commands_still_come_through(
    recognizer, vad, shared, clip: str, grammar: str, intent: str
) -> None:
    audio = read_wav(str(shared / f"data/callers_dev/{clip}.wav"))
    text = transcribe_audio(recognizer, vad, audio, grammar_vocabulary(recognizer.tokenizer, grammar, BOOST)).text
    candidates = {"digits"} if grammar == "digits" else {"yes", "no"}
    assert IntentRecognizer().recognize(text, grammar, candidates, {}).intent == intent, text


def test_normal_speech_is_decoded_as_before_without_the_grammar(recognizer, vad, shared) -> None:
    # A free-speech node gets no vocabulary, so its decode is the recognizer's own.
    audio = read_wav(str(shared / "data/callers_dev/dev031.wav"))
    vocabulary = grammar_vocabulary(recognizer.tokenizer, "free", BOOST)
    assert transcribe_audio(recognizer, vad, audio, vocabulary).text == transcribe_audio(recognizer, vad, audio).text
