"""Checks that keep Whisper from inventing text on silence, noise and its own loops."""

from __future__ import annotations

import math
import zlib


def max_new_tokens(seconds: float, per_second: float, floor: int, ceiling: int) -> int:
    """A budget proportional to the audio: speech rarely exceeds ~5 tokens per second."""
    return max(1, min(ceiling, max(floor, math.ceil(seconds * per_second))))


# A phrase this long said twice in a row is the decoder looping, not the speaker.
LONG_PHRASE = 8


def repeated_tail(tokens: list[int], max_repeats: int, max_ngram: int | None = None, min_ngram: int = 1) -> int | None:
    """Length to cut `tokens` to when their tail repeats an n-gram more than allowed, else None.

    Single tokens get twice the allowance, since callers do say "no no no" or "five five five";
    phrases of `LONG_PHRASE` tokens or more get none: one repeat is a loop (Whisper's multilingual
    models replay whole sentences). `max_ngram` defaults to half the tokens.
    """
    n_tok = len(tokens)
    for n in range(min_ngram, (max_ngram or n_tok // 2) + 1):
        allowed = max_repeats * 2 if n == 1 else max_repeats if n < LONG_PHRASE else 1
        if n_tok < (allowed + 1) * n:
            continue  # too short for this n; a longer n may need fewer repeats
        gram = tokens[-n:]
        if all(tokens[-(k + 1) * n : n_tok - k * n] == gram for k in range(1, allowed + 1)):
            return n_tok - allowed * n  # keep one occurrence
    return None


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def judged_logprob(token_logprobs: list[float], end_logprob: float | None) -> float:
    """The mean log-probability Whisper's no-speech and loop checks are calibrated on: the text's
    tokens and the end token (when the decode ended on it). Without the end token, a one-word answer
    ("pound.", "six") whose end is certain averages below -1 and is taken for silence."""
    lps = token_logprobs if end_logprob is None else [*token_logprobs, end_logprob]
    return sum(lps) / len(lps) if lps else 0.0
