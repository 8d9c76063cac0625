"""What happens on a call, as the dialog policy sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The caller is connected: the flow's start node speaks first."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """A final transcript of one caller turn."""

    text: str
    confidence: float = 1.0  # recognizer's own confidence, kept for the call record
    latency_ms: float | None = None  # end of speech -> transcript


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One or more keypad digits, in order (a transport may deliver "123456#" at once)."""

    digits: str


@dataclass(frozen=True, slots=True)
class NoInput:
    """The listen or digit timeout expired with nothing (more) from the caller."""


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str = "caller"


Event = CallStarted | Utterance | Dtmf | NoInput | Hangup
