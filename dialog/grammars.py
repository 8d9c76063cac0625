"""Transcript normalization and the two closed grammars: spoken digits and yes/no.

Transcripts arrive either clean ("My account number is 4719-22.") or as raw ASR output ("my account
number is for seven one nine too two"); both are reduced to lowercase word tokens first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_CONTRACTIONS = (
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), " is"),
)
# Raw ASR often drops the apostrophe.
_BARE_CONTRACTIONS = {
    "cant": "can not",
    "cannot": "can not",
    "dont": "do not",
    "doesnt": "does not",
    "didnt": "did not",
    "isnt": "is not",
    "wont": "will not",
    "wasnt": "was not",
    "thats": "that is",
    "whats": "what is",
    "im": "i am",
    "ive": "i have",
    "youre": "you are",
}
_NON_WORD = re.compile(r"[^a-z0-9']+")


def normalize(text: str) -> list[str]:
    """Lowercase word tokens, contractions expanded, punctuation dropped, numerals kept as tokens."""
    s = text.lower().replace("’", "'")
    for pattern, repl in _CONTRACTIONS:
        s = pattern.sub(repl, s)
    s = _NON_WORD.sub(" ", s).replace("'", "")
    tokens: list[str] = []
    for tok in s.split():
        tokens.extend(_BARE_CONTRACTIONS.get(tok, tok).split())
    return tokens


_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "nil": "0",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
# Words a recognizer writes for a digit it heard; trusted only next to real digits.
_HOMOPHONES = {"to": "2", "too": "2", "for": "4", "fore": "4", "won": "1", "ate": "8", "free": "3"}
_TEENS = {
    "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14",
    "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19",
}  # fmt: skip
_TENS = {
    "twenty": "2", "thirty": "3", "forty": "4", "fifty": "5",
    "sixty": "6", "seventy": "7", "eighty": "8", "ninety": "9",
}  # fmt: skip
_REPEATERS = {"double": 2, "triple": 3}


@dataclass(frozen=True, slots=True)
class DigitParse:
    digits: str
    digit_tokens: int  # tokens that were digits
    other_tokens: int  # filler and everything else


def parse_digits(tokens: list[str]) -> DigitParse:
    """Digits spoken in `tokens`: "oh"/"zero", "double five", numerals, "twenty three"; filler skipped."""
    out: list[str] = []
    used = 0
    i = 0
    n = len(tokens)

    def digit_at(j: int) -> str | None:
        if j >= n:
            return None
        return _DIGIT_WORDS.get(tokens[j]) or (tokens[j] if tokens[j].isdigit() else None)

    while i < n:
        tok = tokens[i]
        if tok in _REPEATERS and (d := digit_at(i + 1)) is not None and len(d) == 1:
            out.append(d * _REPEATERS[tok])
            used += 2
            i += 2
            continue
        if (d := digit_at(i)) is not None:
            out.append(d)
            used += 1
        elif tok in _TEENS:
            out.append(_TEENS[tok])
            used += 1
        elif tok in _TENS:
            unit = _DIGIT_WORDS.get(tokens[i + 1]) if i + 1 < n else None
            if unit is not None and unit != "0" and tokens[i + 1] not in ("oh", "o"):
                out.append(_TENS[tok] + unit)
                used += 2
                i += 2
                continue
            out.append(_TENS[tok] + "0")
            used += 1
        elif tok in _HOMOPHONES and _next_to_digit(tokens, i):
            out.append(_HOMOPHONES[tok])
            used += 1
        i += 1
    return DigitParse("".join(out), used, n - used)


def number_tokens(tokens: list[str]) -> list[bool]:
    """Which tokens `parse_digits` would read as (part of) a number: what a record must not show."""
    marks = []
    for i, tok in enumerate(tokens):
        repeater = tok in _REPEATERS and i + 1 < len(tokens) and _is_digit_token(tokens[i + 1])
        homophone = tok in _HOMOPHONES and _next_to_digit(tokens, i)
        marks.append(_is_digit_token(tok) or any(c.isdigit() for c in tok) or repeater or homophone)
    return marks


def _is_digit_token(tok: str) -> bool:
    return tok in _DIGIT_WORDS or tok.isdigit() or tok in _TEENS or tok in _TENS


def _next_to_digit(tokens: list[str], i: int) -> bool:
    before = i > 0 and _is_digit_token(tokens[i - 1])
    after = i + 1 < len(tokens) and _is_digit_token(tokens[i + 1])
    return before or after


_YES = {
    ("yes",), ("yeah",), ("yea",), ("yep",), ("yup",), ("ya",), ("yah",), ("correct",), ("right",),
    ("sure",), ("absolutely",), ("affirmative",), ("exactly",), ("okay",), ("ok",), ("definitely",),
    ("uh", "huh"), ("of", "course"), ("sounds", "good"), ("that", "is", "it"), ("yes", "please"),
}  # fmt: skip
_NO = {
    ("no",), ("nope",), ("nah",), ("wrong",), ("incorrect",), ("negative",), ("not",), ("nay",),
    ("no", "way"), ("not", "really"),
}  # fmt: skip


def _has(tokens: list[str], phrases: set[tuple[str, ...]]) -> bool:
    return any(tuple(tokens[i : i + len(p)]) == p for p in phrases for i in range(len(tokens) - len(p) + 1))


_FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "well", "oh", "hmm", "so"})
_ANSWER_STARTS = frozenset(w for phrase in _YES | _NO for w in phrase[:1] if w not in ("not", "of", "sounds", "that"))
# "That's right" / "that's wrong" answer wherever they stand; a recognizer often writes "no" as "know".
_VERDICTS = {("that", "is", w) for w in ("right", "correct", "wrong", "incorrect")}
_SOUND_ALIKES = {"know": "no", "yet": "yes"}


def answer(tokens: list[str]) -> Literal["yes", "no"] | None:
    """A yes/no said as an answer in free speech: it must open the utterance or be a verdict.

    Elsewhere "no"/"not" are just words of a request ("my phone will not turn on").
    """
    rest = [t for t in tokens if t not in _FILLERS]
    if rest and rest[0] in _SOUND_ALIKES and len(rest) <= 4:
        rest = [_SOUND_ALIKES[rest[0]], *rest[1:]]
    if rest and (rest[0] in _ANSWER_STARTS or _has(rest, _VERDICTS)):
        return yes_no(rest)
    return None


def yes_no(tokens: list[str]) -> Literal["yes", "no"] | None:
    """Map "yeah", "that's right" to yes and "nope", "that's wrong", "not right" to no; else None.

    A negation wins over an affirmative word, because "not right" contains "right".
    """
    if _has(tokens, _NO):
        return "no"
    if _has(tokens, _YES):
        return "yes"
    return None


def vocabulary(grammar: str) -> tuple[str, ...]:
    """The words an answer of a closed grammar is made of (numerals aside), for decoding toward them;
    () for free speech."""
    if grammar == "digits":
        return (*_DIGIT_WORDS, *_TEENS, *_TENS, *_REPEATERS)
    if grammar == "yes_no":
        return tuple(sorted({w for phrase in _YES | _NO | _VERDICTS for w in phrase} | set(_SOUND_ALIKES)))
    return ()
