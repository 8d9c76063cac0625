"""Transcript post-pass: replace word spans that sound like an active hot phrase with the phrase.

A span of 1..n+3 words (n: words of the phrase; hyphenated compounds are never cut) matches when both its
spelling (letters only, spaces removed) and its Metaphone code are close to the phrase's. The thresholds
are deliberately strict: a false replacement in an ordinary sentence costs more than a missed name.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

import jellyfish
import numpy as np
from rapidfuzz import fuzz, process

from hotwords.schema import normalize_phrase

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@dataclass(frozen=True, slots=True)
class Hit:
    phrase: str
    heard: str  # the replaced text
    start: int  # character offsets in the input text
    end: int
    spelling: float  # 0..100
    sound: float  # 0..100


@dataclass(frozen=True, slots=True)
class _Target:
    phrase: str
    words: int
    key: str
    code: str


# Loose readings (see `PhraseCorrector.alternatives`) must reach this spelling + sound total. A bigger
# catalogue offers ordinary words more chance look-alikes, and every utterance with one costs a decoder
# pass to weigh it, so the bar rises with the catalogue. Of 271 transcripts of the Asterisk prompts (no
# product names in them), 15-20% have a loose reading with 30 to 1,000 made-up names loaded; 13% with
# the six callers_dev names (base bar), 7% with 3,000.
LOOSE_TOTAL = 100.0
LOOSE_TOTAL_PER_DECADE = 17.0
LOOSE_TOTAL_FROM = 10  # phrases; smaller lists keep the base bar


def loose_total(phrases: int) -> float:
    return LOOSE_TOTAL + LOOSE_TOTAL_PER_DECADE * math.log10(max(phrases, LOOSE_TOTAL_FROM) / LOOSE_TOTAL_FROM)


# Syllables of the invented names `decoys` makes.
_SYLLABLES = "ka lo ve tri zen mor qui bel dra nix sol tav ru pex go fen lu ster ban dor".split()  # noqa: SIM905


def decoys(phrase: str, count: int = 8) -> list[str]:
    """Invented names of `phrase`'s shape: each word but the last (a one-word phrase: that word)
    replaced by random syllables of about its length. Seeded by the phrase: always the same ones."""
    rng = random.Random(f"decoy/{phrase}")
    words = phrase.split()
    head = words[:-1] if len(words) > 1 else words
    out: list[str] = []
    while len(out) < count:
        made = ["".join(rng.choice(_SYLLABLES) for _ in range(max(2, round(len(w) / 3)))).capitalize() for w in head]
        name = " ".join([*made, *words[len(head) :]])
        if name != phrase and name not in out:
            out.append(name)
    return out


def _key(text: str) -> str:
    return "".join(ch for ch in normalize_phrase(text) if ch.isalnum())


class PhraseCorrector:
    def __init__(
        self,
        phrases: Iterable[str],
        *,
        min_spelling: float = 75.0,
        min_sound: float = 80.0,
        min_total: float = 160.0,
        short_key_chars: int = 8,
        short_min_spelling: float = 88.0,
    ) -> None:
        self._targets = []
        for phrase in dict.fromkeys(phrases):
            key = _key(phrase)
            if key:
                self._targets.append(_Target(phrase, len(phrase.split()), key, jellyfish.metaphone(key)))
        self._keys = [t.key for t in self._targets]
        self._words = np.array([t.words for t in self._targets])
        self._chars = np.array([len(t.key) for t in self._targets])
        self._key_set = frozenset(self._keys)
        self._phrase_of = {t.key: t.phrase for t in self._targets}
        self._min_spelling = min_spelling
        self._min_sound = min_sound
        self._min_total = min_total
        self._short_key_chars = short_key_chars
        self._short_min_spelling = short_min_spelling

    def _accepts(self, target: _Target, spelling: float, sound: float) -> bool:
        # Short phrases collide with ordinary words far more easily: demand a closer spelling.
        floor = self._short_min_spelling if len(target.key) < self._short_key_chars else self._min_spelling
        return spelling >= floor and sound >= self._min_sound and spelling + sound >= self._min_total

    def _spans(self, text: str, accept, extra_words: int = 2, min_spelling: float = 50.0) -> list[tuple[float, Hit]]:
        """Every (score, hit) whose span of `text` sounds and reads like a phrase, per `accept`; a
        span has at most `extra_words` more words than the phrase. Spans are matched against all
        phrases at once (rapidfuzz), so a catalogue of thousands costs little more than a few."""
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        keys = [_key(text[a:b]) for a, b in words]
        # A span may not start or end inside a hyphenated compound ("all-or-be-low").
        joined = [text[words[i][1] : words[i + 1][0]] == "-" for i in range(len(words) - 1)]
        longest = max((t.words for t in self._targets), default=0) + extra_words
        # Words that already spell out a phrase are settled: a span that cuts into them would trade
        # a heard phrase for a guessed one, or swallow its neighbours.
        # (Such a span itself stays a candidate: replacing it only restores the phrase's spelling.)
        exact = self._spelled(keys, longest)
        settled = [any(a <= i <= b for a, b in exact) for i in range(len(words))]
        spans = [
            (first, last, "".join(keys[first : last + 1]))
            for first in range(len(words))
            if not (first and joined[first - 1])
            for last in range(first, min(len(words), first + longest))
            if not (last < len(words) - 1 and joined[last])
            and not (any(settled[first : last + 1]) and (first, last) not in exact)
        ]
        if not spans or not self._targets:
            return []
        # Every span against every phrase in one call; entries below `min_spelling` come back as 0.
        spelling = process.cdist(
            [key for _, _, key in spans], self._keys, scorer=fuzz.ratio, score_cutoff=min_spelling, dtype=np.float64
        )
        span_words = np.array([last - first + 1 for first, last, _ in spans])[:, None]
        span_chars = np.array([len(key) for _, _, key in spans])[:, None]
        near = (
            (spelling > 0)
            & (span_words <= self._words[None] + extra_words)
            & (span_chars >= 0.6 * self._chars[None])
            & (span_chars <= 1.6 * self._chars[None])
        )
        codes: dict[int, str] = {}
        candidates: list[tuple[float, Hit]] = []
        for row, i in zip(*np.nonzero(near), strict=True):
            first, last, key = spans[row]
            target = self._targets[i]
            if row not in codes:
                codes[row] = jellyfish.metaphone(key)
            sound = fuzz.ratio(codes[row], target.code)
            score = float(spelling[row, i])
            if accept(target, score, sound):
                start, end = words[first][0], words[last][1]
                candidates.append((score + sound, Hit(target.phrase, text[start:end], start, end, score, sound)))
        return candidates

    def _spelled(self, keys: list[str], longest: int) -> set[tuple[int, int]]:
        """(first, last) word spans whose letters spell out a phrase exactly."""
        return {
            (first, last)
            for first in range(len(keys))
            for last in range(first, min(len(keys), first + longest))
            if "".join(keys[first : last + 1]) in self._key_set
        }

    def _named_spans(self, keys: list[str]) -> dict[tuple[int, int], str]:
        # A phrase may come out split further ("Nova Pay wallet"): spans get two words of slack.
        spans = self._spelled(keys, max((t.words for t in self._targets), default=0) + 2)
        return {(first, last): self._phrase_of["".join(keys[first : last + 1])] for first, last in spans}

    def named(self, text: str) -> set[str]:
        """The phrases `text` holds (whatever its case, spacing or punctuation)."""
        return set(self._named_spans([_key(m.group()) for m in _WORD.finditer(text)]).values())

    def transplant(self, text: str, into: str, phrases: Collection[str] | None = None) -> str:
        """`into` with the phrases `text` holds (or those of them in `phrases`) put in: where the two
        read differently (word by word, whatever the case or punctuation) around a phrase, `text`'s
        words replace `into`'s; everywhere else `into` stays as it is. The words of a phrase left out
        never come along ("Venquor Max, Sabrelo music" against a reading with neither: "Venquor Max").
        Weighing the result against `into` judges the phrases alone, not the other words two decodes
        disagree on."""
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        others = [(m.start(), m.end()) for m in _WORD.finditer(into)]
        keys = [_key(text[a:b]) for a, b in words]
        spans, left_out = {}, set()
        for (first, last), phrase in self._named_spans(keys).items():
            if phrases is None or phrase in phrases:
                spans[first, last] = phrase
            else:
                left_out.update(range(first, last + 1))
        ops = SequenceMatcher(None, keys, [_key(into[a:b]) for a, b in others], autojunk=False).get_opcodes()
        # Neighbouring stretches that touch a phrase, merged: (i1, i2) of `text`'s words, (j1, j2) of `into`'s.
        merged: list[tuple[int, int, int, int]] = []
        for tag, i1, i2, j1, j2 in ops:
            touched = [(first, last) for first, last in spans if first < i2 and i1 <= last]
            if i1 == i2 or not touched:
                continue
            if tag == "equal":  # words both read alike are taken only where they are the phrase's
                lo, hi = max(i1, min(f for f, _ in touched)), min(i2, max(last for _, last in touched) + 1)
                i1, i2, j1, j2 = lo, hi, j1 + lo - i1, j1 + hi - i1
            if merged and merged[-1][1] == i1:
                i1, _, j1, _ = merged.pop()
            merged.append((i1, i2, j1, j2))
        parts: list[str] = []
        cursor = 0
        for i1, i2, j1, j2 in merged:
            # Runs of the stretch's words outside the phrases left out.
            runs: list[list[int]] = []
            for k in range(i1, i2):
                if k in left_out:
                    continue
                if runs and runs[-1][-1] == k - 1:
                    runs[-1].append(k)
                else:
                    runs.append([k])
            piece = " ".join(text[words[run[0]][0] : words[run[-1]][1]] for run in runs)
            if j1 < j2:
                start, end = others[j1][0], others[j2 - 1][1]
            elif j1 < len(others):  # nothing there: before `into`'s next word
                start = end = others[j1][0]
                piece += " "
            else:  # or after its last
                start = end = others[-1][1] if others else len(into)
                piece = " " + piece if others else piece
            parts += [into[cursor:start], piece]
            cursor = end
        parts.append(into[cursor:])
        return "".join(parts)

    def swap(self, text: str, phrase: str, other: str) -> str:
        """`text` with `other` written wherever it spells `phrase`."""
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        spans = self._named_spans([_key(text[a:b]) for a, b in words])
        hits = [Hit(p, "", words[first][0], words[last][1], 100.0, 100.0) for (first, last), p in spans.items()]
        return _replace(
            text, [replace(h, phrase=other) for h in sorted(hits, key=lambda h: h.start) if h.phrase == phrase]
        )

    def spelled(self, text: str) -> bool:
        """Whether `text` already holds a phrase."""
        return bool(self.named(text))

    def correct(self, text: str) -> tuple[str, list[Hit]]:
        """The text with matched spans replaced by their phrase, and the hits (in text order)."""
        chosen: list[Hit] = []
        spans = self._spans(text, self._accepts, min_spelling=min(self._min_spelling, self._short_min_spelling))
        for _, hit in sorted(spans, key=lambda item: (-item[0], item[1].start)):
            if all(hit.end <= other.start or hit.start >= other.end for other in chosen):
                chosen.append(hit)
        chosen.sort(key=lambda hit: hit.start)
        return _replace(text, chosen), chosen

    def alternatives(self, text: str, limit: int = 6, min_total: float | None = None) -> list[str]:
        """Readings of `text` with one loosely matching span replaced by a phrase, closest first.

        Too loose to apply blindly: they are meant to be weighed against the audio (the recognizer
        scores each reading) before one replaces the transcript. `min_total` defaults to the bar for
        this catalogue's size (`loose_total`).
        """
        if min_total is None:
            min_total = loose_total(len(self._targets))
        spans = self._spans(text, lambda target, spelling, sound: spelling + sound >= min_total, extra_words=1)
        out: list[str] = []
        for _, hit in sorted(spans, key=lambda item: -item[0]):
            alt = _replace(text, [hit])
            if alt != text and alt not in out:
                out.append(alt)
            if len(out) == limit:
                break
        return out


def _replace(text: str, hits: list[Hit]) -> str:
    parts: list[str] = []
    cursor = 0
    for hit in hits:
        parts.append(text[cursor : hit.start])
        parts.append(hit.phrase)
        cursor = hit.end
    parts.append(text[cursor:])
    return "".join(parts)
