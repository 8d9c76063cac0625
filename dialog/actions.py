"""What the dialog asks the call session to do, in order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Play:
    """Play a prompt: the WAV when given, else synthesize `text`."""

    text: str | None
    wav: str | None = None
    barge_in: bool = True
    # The text reads caller data back (an account number): it is spoken from per-digit audio in memory,
    # never rendered whole to the prompt cache on disk.
    private: bool = False


@dataclass(frozen=True, slots=True)
class Listen:
    """Recognize the caller's next turn with this grammar and these hot words."""

    grammar: str  # "free", "digits" or "yes_no"
    hotwords: tuple[str, ...] = ()
    hotword_lists: tuple[str, ...] = ()  # names of admin-managed lists
    timeout_ms: int = 5000
    barge_in: bool = True
    end_silence_ms: int | None = None  # silence that ends the caller's turn; None: the service's setting
    end_key: str | None = None  # a key that ends the spoken turn at once (the collection's terminator)
    expect_digits: int | None = None  # a spoken number this long is complete: no need to wait the silence


@dataclass(frozen=True, slots=True)
class CollectDigits:
    """Gather keypad digits until the terminator, `max_length` digits or `timeout_ms` between digits."""

    min_length: int
    max_length: int
    terminator: str | None
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Route:
    queue: str


@dataclass(frozen=True, slots=True)
class Transfer:
    uri: str


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


Action = Play | Listen | CollectDigits | Route | Transfer | Hangup
# Actions after which the call has left the dialog.
TERMINAL_ACTIONS = (Route, Transfer, Hangup)
