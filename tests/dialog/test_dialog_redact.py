"""Call records keep the caller's account numbers and PINs masked unless the flow marks them storable."""

from __future__ import annotations

import pytest

from dialog import events as ev
from dialog.context import MemoryContextStore
from dialog.flow import load_demo_flow, parse_flow
from dialog.policy import DialogPolicy
from dialog.records import MemoryRecordStore
from dialog.redact import mask, mask_caller, mask_numerals, mask_spoken
from dialog.session import DialogSession


async def _record(flow_text: str | None, *events: ev.Event):
    flow = parse_flow(flow_text) if flow_text else load_demo_flow()
    records = MemoryRecordStore()
    session = DialogSession("c1", DialogPolicy(flow), MemoryContextStore(), records, caller="+15550142")
    await session.start()
    for event in events:
        await session.handle(event)
    record = await records.get("c1")
    assert record is not None and record.outcome is not None
    return record


async def test_account_number_is_masked_in_turns_prompts_and_transcripts() -> None:
    record = await _record(
        None,
        ev.Utterance("my account number is 47192233 please"),  # said at the main menu
        ev.Utterance("four seven one nine two two three three"),
        ev.Utterance("no"),
        ev.Dtmf("471922"),
        ev.Dtmf("33#"),
        ev.Utterance("yes"),
    )
    text = record.model_dump_json()
    for secret in ("4719", "4 7 1 9", "four seven", "47192233"):
        assert secret not in text, secret
    turns = record.turns
    assert turns[1].transcript == "my account number is ******33 please" and turns[1].intent == "account"
    assert turns[2].transcript == "* * * * * * * *"
    confirm = [p for p in turns[2].prompts if p.startswith("I have")]
    assert confirm == ["I have * * * * * * 3 3. Is that right? Say yes or press 1, or say no or press 2."]
    assert [t.dtmf for t in turns[4:6]] == ["******", "**#"]  # no digit of a keyed number shows
    assert turns[6].transcript == "yes"
    assert record.outcome == {"route": "account"}


STORABLE = """
id: t
start: ticket
nodes:
  ticket:
    prompt: {text: "Your ticket number?"}
    confirm: {text: "Ticket {ticket}?"}
    grammar: digits
    collect: {slot: ticket, min_length: 4, max_length: 8, storable: true, next: {route: support}}
"""


async def test_a_storable_slot_is_kept_as_keyed() -> None:
    record = await _record(STORABLE, ev.Dtmf("123456#"), ev.Dtmf("1"))
    assert record.turns[2].dtmf == "1"  # and the answer to the confirmation
    assert record.turns[1].dtmf == "123456#"
    assert record.turns[1].prompts == ["Ticket 1 2 3 4 5 6?"]


@pytest.mark.parametrize(
    ("helper", "text", "masked"),
    [
        (mask, "471922#", "****22#"),
        (mask, "12", "12"),
        (lambda t: mask(t, keep=0), "12#", "**#"),
        (mask_spoken, "It's double five, forty two, oh nine", "it is * * * * * *"),
        (mask_numerals, "call 555-123-4567 or press 2", "call ***-***-**67 or press 2"),
        (mask_numerals, "my 2 kids", "my 2 kids"),
    ],
)
def test_masks(helper, text: str, masked: str) -> None:
    assert helper(text) == masked


@pytest.mark.parametrize(
    "caller, shown",
    [
        ("5551234567", "******4567"),
        ("+15551234567", "+*******4567"),
        ("sip:5551234567@192.0.2.10:5060", "sip:******4567@192.0.2.10:5060"),  # the gateway stays
        ("tel:+15551234567;phone-context=example.com", "tel:+*******4567;phone-context=example.com"),
        ("alice", "a****"),
        ("sips:alice@example.com", "sips:a****@example.com"),
        ("203.0.113.57", "***.*.***.57"),  # a browser caller's address
        ("2001:db8::4a3f", "****:***::**3f"),
        ("101", "101"),  # an extension: nothing longer than the digits kept
        ("", ""),
    ],
)
def test_caller_ids_keep_their_last_digits_only(caller: str, shown: str) -> None:
    assert mask_caller(caller) == shown
    assert mask_caller(shown) == shown  # masking a masked value (a stored record) changes nothing
