"""Decoding toward a closed vocabulary: when the dialog expects a number (or a yes/no), the decoder is
told so, as an SRGS digits grammar tells a telephony recognizer.

A `Vocabulary` is a `Biaser` whose every step boosts the same tokens, those that can spell an answer
of the grammar (numerals, the grammar's words, the marks between digits, the end of the text), by the same amount:
every other token is demoted by that much, a soft logit mask. The boost only steers the choice of
token: it is taken back from the hypothesis score, so beam ranking, confidence and the no-speech and
repetition checks see the model's own log-probabilities. A soft mask rather than a hard one, so that a
caller who says "repeat" or "go back" at a digits prompt is still heard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..tokenizer import WhisperTokenizer
from .bias import Biaser, BiasState

# Whisper writes commas or dashes between digits and a full stop after the last: those stay as
# likely as the end of the text, or the decode stops after the first digit, or goes on past the last
# one ("nine, nine,"). Tokens of several marks ("...", ".,") are left out: boosted, a decode ended in
# nothing but dots.
_SEPARATORS = frozenset({",", "-", "."})


@dataclass(frozen=True, slots=True)
class VocabularyState:
    table: Mapping[int, float]

    def boosts(self) -> Mapping[int, float]:
        return self.table

    def advance(self, token: int) -> tuple[VocabularyState, float]:
        return self, -self.table.get(token, 0.0)

    def prompt_text(self) -> str:
        return ""


@dataclass(frozen=True)
class Vocabulary:
    """The tokens of a closed vocabulary, each boosted by the same amount at every step."""

    table: Mapping[int, float]

    @classmethod
    def build(cls, tokenizer: WhisperTokenizer, words: Iterable[str], boost: float, numerals: bool) -> Vocabulary:
        """`words` in the spellings Whisper writes them (lower case, capitalized, after a space or not)
        where a spelling is one token, with `numerals` every token written in digits alone, the
        marks Whisper writes between and after digits, and the end of the text."""
        ids: set[int] = {tokenizer.special.eot}
        for word in words:
            for spelling in (word, word.capitalize()):
                for text in (spelling, " " + spelling):
                    # Only whole words: a boosted piece ("th" of "thirteen") turns up everywhere ("6th").
                    if len(pieces := tokenizer.encode(text)) == 1:
                        ids.update(pieces)
        for i in range(tokenizer.special.eot):
            text = tokenizer.decode([i]).strip()
            if (numerals and text.isdigit()) or text in _SEPARATORS:
                ids.add(i)
        return cls({i: boost for i in sorted(ids)})

    def start(self) -> VocabularyState:
        return VocabularyState(self.table)


@dataclass(frozen=True, slots=True)
class CombinedState:
    """Several biasing states at once: their boosts add up, and so do their score corrections."""

    states: tuple[BiasState, ...]

    def boosts(self) -> Mapping[int, float]:
        out: dict[int, float] = {}
        for state in self.states:
            for token, boost in state.boosts().items():
                out[token] = out.get(token, 0.0) + boost
        return out

    def advance(self, token: int) -> tuple[CombinedState, float]:
        moved = [state.advance(token) for state in self.states]
        return CombinedState(tuple(s for s, _ in moved)), sum(c for _, c in moved)

    def prompt_text(self) -> str:
        return " ".join(t for s in self.states if (t := s.prompt_text()))


@dataclass(frozen=True)
class Combined:
    """A `Biaser` of several (hot words and a grammar's vocabulary)."""

    biasers: tuple[Biaser, ...]

    def start(self) -> CombinedState:
        return CombinedState(tuple(b.start() for b in self.biasers))
