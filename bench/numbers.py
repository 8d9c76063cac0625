"""Numbers for scoring: every way of writing a number reduced to one form, on both sides of a WER.

Recognizers write numerals ("12", "15th", "2,500") where a reference spells what was said
("twelve", "fifteenth", "two thousand five hundred"); scored word by word, those are errors of
spelling, not of hearing. So every maximal run of number words and numerals becomes the digits it
writes, one token per digit, its trailing zeros one token, and "th" after an ordinal:

    "twelve", "12", "one two", "1 2"              -> 1 2
    "fifteenth", "15th"                            -> 1 5 th
    "twenty one", "21", "two one"                  -> 2 1
    "two thousand five hundred", "2,500", "2500"   -> 2 5 00
    "five oh one", "double five"                   -> 5 0 1, 5 5
    "twenty eight point eight", "28.8"             -> 2 8 point 8

Within a run, words compose a number as English says it ("one hundred and five", "a thousand",
"5 million"); where they cannot ("one two", "nineteen ninety", "4 7 1-9 2 2"), each number's
digits follow the last one's. So digits said one by one and the same digits said as a whole number
score the same: "one two" equals "twelve", as both equal "12". A numeral does not say which of the
two was spoken, and every system writes numerals, so any scoring that told them apart would count
against the written form rather than against what was heard; the price is that a system writing
"twelve" for "one two" goes unpunished. One token per digit keeps a digit string's weight at the
words said and makes its grouping ("471-922", "47 19 22") irrelevant; the trailing zeros as one
token keep "million" at two tokens rather than seven.

"oh" counts as zero only next to another digit ("five oh one"; "oh no" stays); "a" only before a
scale word ("a hundred"); "and" only between a scale word and what it adds ("hundred and five").
Plurals ("hundreds") and homophones ("to", "for") stay words: scoring must not repair hearing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ONES = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_CARDINALS = {*_ONES, *_TEENS, *_TENS, *_SCALES, "hundred", "zero"}
_IRREGULAR_ORDINALS = {
    "first": "one", "second": "two", "third": "three", "fifth": "five", "eighth": "eight", "ninth": "nine",
    "twelfth": "twelve",
}  # fmt: skip
_SUFFIXES = {"st", "nd", "rd", "th"}  # of a numeral ordinal ("15th", split from its digits)
_ZEROS = {"zero", "oh", "o"}
_REPEATS = {"double": 2, "triple": 3}


def numerals(text: str) -> str:
    """Lower-case text with its numerals in words' shape: thousands separators dropped, a decimal
    point said ("point"), other dots between digits dropped, digits split from letters ("15th" ->
    "15 th", "h323" -> "h 323")."""
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    # One dot between digits is a decimal point; more ("5.5.0.1") only separate digits, as hyphens do.
    t = re.sub(r"(?<!\d)(?<!\d\.)(\d+)\.(\d+)(?!\.?\d)", r"\1 point \2", t)
    t = t.replace("%", " percent ")
    return re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", t)


def canonical_numbers(words: list[str]) -> list[str]:
    """`words` (lower case, punctuation gone, numerals as digit tokens) with every run of numbers
    in the canonical form above."""
    out: list[str] = []
    i = 0
    while i < len(words):
        if _number_word(words, i) is None:
            out.append(words[i])
            i += 1
            continue
        run = _Run()
        i = run.read(words, i)
        out.extend(_tokens(run.digits))
        if run.ordinal:
            out.append("th")
    return out


def _tokens(digits: str) -> list[str]:
    """One token per digit, the trailing zeros of a number other than zero as one."""
    body = digits.rstrip("0")
    if not body:
        return list(digits)
    zeros = digits[len(body) :]
    return [*body, *([zeros] if zeros else [])]


def _cardinal(word: str) -> str | None:
    """The cardinal of an ordinal word ("twentieth" -> "twenty"), else None."""
    if word in _IRREGULAR_ORDINALS:
        return _IRREGULAR_ORDINALS[word]
    stem = word[:-4] + "y" if word.endswith("ieth") else word[:-2] if word.endswith("th") else ""
    return stem if stem in _CARDINALS else None


def _is_digit(words: list[str], i: int) -> bool:
    """A single digit: a digit word or a numeral."""
    return 0 <= i < len(words) and (words[i].isdigit() or words[i] in _ONES or words[i] == "zero")


def _number_word(words: list[str], i: int, in_run: bool = False) -> str | None:
    """What the word at `i` is as part of a number (a cardinal word, a numeral, or "ordinal",
    "zero", "a", "and", "repeat"), or None where it is no number word there."""
    w = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if w.isdigit() or w in _CARDINALS:
        return w
    if _cardinal(w) is not None:
        return "ordinal"
    if w in _ZEROS and (_is_digit(words, i + 1) or (in_run and _is_digit(words, i - 1))):
        return "zero"
    if w == "a" and not in_run and (nxt in _SCALES or nxt == "hundred" or _cardinal(nxt) in (*_SCALES, "hundred")):
        return "a"
    if w in _REPEATS and ((_is_digit(words, i + 1) and len(nxt) == 1) or nxt in _ONES or nxt in _ZEROS):
        return "repeat"
    if w == "and" and in_run and (nxt in _ONES or nxt in _TEENS or nxt in _TENS or _cardinal(nxt) is not None):
        return "and"
    return None


@dataclass
class _Run:
    """Reads one run of number words and numerals into the digits it writes: the numbers of the
    run one after another, each composed as English says it."""

    digits: str = ""  # the numbers of the run finished so far
    ordinal: bool = False
    total: int = 0  # the number being composed: its scaled groups ("two thousand")
    part: int = 0  # and what is under a thousand ("five hundred twenty")
    last: str | None = None  # what its last word was: None (no number open), ones, teen, tens, numeral, hundred, scale
    scale: int = 0  # its smallest scale word so far

    def read(self, words: list[str], i: int) -> int:
        """Read the run that starts at `i`; the index after it."""
        while i < len(words) and not self.ordinal:
            kind = _number_word(words, i, in_run=self.last is not None or bool(self.digits))
            if kind is None or (kind == "and" and self.last not in ("hundred", "scale")):
                break
            w = words[i]
            i += 1
            if kind == "ordinal":
                self.ordinal = True
                w = _cardinal(w) or w
            elif w.isdigit() and i < len(words) and words[i] in _SUFFIXES:
                self.ordinal = True
                i += 1
            if kind == "repeat":
                digit = words[i]
                self._literal(("0" if digit in _ZEROS else str(_ONES.get(digit, digit))) * _REPEATS[w])
                i += 1
            elif kind == "zero":
                self._literal("0")
            elif kind != "and":  # "hundred and five": the "and" adds nothing
                self._word(w)
        self._flush()
        return i

    def _word(self, w: str) -> None:
        if w == "a":
            self._small(1, "ones")
        elif w in _ONES:
            self._small(_ONES[w], "ones")
        elif w in _TEENS:
            self._small(_TEENS[w], "teen")
        elif w in _TENS:
            self._small(_TENS[w], "tens")
        elif w == "hundred":
            self._hundred()
        elif w in _SCALES:
            self._scale(_SCALES[w])
        elif w == "zero" or w.startswith("0") or int(w) >= 1000:
            self._literal(w if w.isdigit() else "0")
        else:
            self._small(int(w), "numeral")

    def _small(self, value: int, kind: str) -> None:
        after_tens = self.last == "tens" and kind == "ones" and self.part % 10 == 0
        after_scale = (self.last == "hundred" and value < 100) or (self.last == "scale" and value < 1000)
        if not (after_tens or after_scale):
            self._flush()
        self.part += value
        self.last = kind

    def _hundred(self) -> None:
        if self.last in ("ones", "teen", "tens", "numeral") and 0 < self.part < 100:
            self.part *= 100
        else:
            self._flush()
            self.part = 100
        self.last = "hundred"

    def _scale(self, scale: int) -> None:
        if self.last not in ("ones", "teen", "tens", "numeral", "hundred") or (self.scale and scale >= self.scale):
            self._flush()
            self.part = 1
        self.total += self.part * scale
        self.part = 0
        self.scale = scale
        self.last = "scale"

    def _literal(self, digits: str) -> None:
        self._flush()
        self.digits += digits

    def _flush(self) -> None:
        if self.last is not None:
            self.digits += str(self.total + self.part)
        self.total = self.part = self.scale = 0
        self.last = None
