"""What a transcript tells the call about its turn: words that trail off hold the turn open, and
backchannels said over a prompt ask for nothing (except "okay" and "yeah" at a yes/no question)."""

from __future__ import annotations

import pytest

from ivr.calls.turn_text import is_backchannel, looks_unfinished


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I'd like to talk about", True),
        ("I'd like to talk about...", True),
        ("I need help with my", True),
        ("My account and", True),
        ("Uh,", True),
        ("I want to pay my bill.", False),
        ("Billing.", False),
        ("Three oh five", False),
        ("", False),
    ],
)
def test_words_that_trail_off_look_unfinished(text: str, unfinished: bool) -> None:
    assert looks_unfinished(text) is unfinished


@pytest.mark.parametrize(
    ("text", "yes_no", "backchannel"),
    [
        ("Uh-huh.", False, True),
        ("Mm-hmm.", False, True),
        ("mhm", False, True),
        ("Okay.", False, True),
        ("Yeah, yeah.", False, True),
        ("Okay.", True, False),  # the answer to a yes/no question
        ("Yeah.", True, False),
        ("Uh-huh.", True, True),
        ("Okay, billing.", False, False),
        ("I want to pay my bill.", False, False),
        ("", False, False),
    ],
)
def test_backchannels(text: str, yes_no: bool, backchannel: bool) -> None:
    assert is_backchannel(text, yes_no) is backchannel
