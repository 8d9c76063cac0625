"""What a transcript says about the turn it came from: a sentence that stops mid-way (the caller is
still thinking) and a backchannel ("uh-huh", "okay": the caller is listening, not answering)."""

from __future__ import annotations

from dialog.grammars import normalize

# Words a finished request does not end on: the caller paused before the rest ("I'd like to talk
# about ... my bill", "my account and ... the router", "uh ...").
_UNFINISHED = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "at",
        "because",
        "but",
        "er",
        "for",
        "from",
        "hmm",
        "i",
        "id",
        "im",
        "in",
        "is",
        "like",
        "mm",
        "my",
        "of",
        "on",
        "or",
        "so",
        "than",
        "that",
        "the",
        "to",
        "uh",
        "um",
        "with",
        "your",
    ]
)
# Whisper writes a trailing hesitation as an ellipsis, a dash or a comma.
_TRAILING = ("...", "…", "-", "—", ",")
# What a listener says to show they follow; said over a prompt it asks for nothing.
_BACKCHANNELS = frozenset(
    [
        "ah",
        "aha",
        "alright",
        "hm",
        "hmm",
        "huh",
        "mhm",
        "mm",
        "mmhmm",
        "mmm",
        "oh",
        "ok",
        "okay",
        "right",
        "sure",
        "uh",
        "uhhuh",
        "uhhuhh",
        "um",
        "yeah",
        "yep",
        "yes",
    ]
)
# At a yes/no question these are the answer, not a backchannel.
_AFFIRMATIONS = frozenset(["alright", "ok", "okay", "right", "sure", "yeah", "yep", "yes"])


def looks_unfinished(text: str) -> bool:
    """The transcript stops where a sentence cannot end (or trails off): wait for the rest."""
    words = normalize(text)
    if not words:
        return False
    return words[-1] in _UNFINISHED or text.rstrip().endswith(_TRAILING)


def is_backchannel(text: str, yes_no: bool = False) -> bool:
    """Only backchannel words ("uh-huh", "mm-hmm", "okay", "yeah"); at a yes/no question an
    affirmation answers it."""
    # "uh-huh" and "mm-hmm" come out hyphenated or as one word: read them as one word.
    words = ["".join(w.split("-")) for w in text.lower().replace("-", "").split()]
    words = [t for w in words for t in normalize(w)]
    allowed = _BACKCHANNELS - _AFFIRMATIONS if yes_no else _BACKCHANNELS
    return bool(words) and all(w in allowed for w in words)
