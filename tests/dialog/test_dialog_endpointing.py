"""The silence that ends a caller's turn, per listen: long at a digits node (pauses between digit
groups), short for yes/no, the service's own setting at a free node, and a node's own value first."""

from __future__ import annotations

import pytest

from dialog import actions as act
from dialog import events as ev
from dialog.flow import FlowError, load_demo_flow, parse_flow
from dialog.policy import DialogPolicy

FLOW = """
id: endpointing
start: menu
settings: {digits_end_silence_ms: 1100, yes_no_end_silence_ms: 250}
nodes:
  menu:
    prompt: {text: "How can I help?"}
    intents: {account: account, agent: quick}
  quick:
    prompt: {text: "Shall I put you through?"}
    grammar: yes_no
    intents: {"yes": {route: agent}, "no": menu}
  account:
    prompt: {text: "Your account number?"}
    confirm: {text: "I have {number}. Right?"}
    grammar: digits
    end_silence_ms: 1600
    collect: {slot: number, min_length: 6, max_length: 10, next: {route: account}}
"""


def listen_of(decision_actions: list[act.Action]) -> act.Listen:
    listens = [a for a in decision_actions if isinstance(a, act.Listen)]
    assert len(listens) == 1, decision_actions
    return listens[0]


def test_demo_flow_defaults_by_grammar() -> None:
    policy = DialogPolicy(load_demo_flow())
    ctx = policy.new_context("c")
    start = policy.decide(ctx, ev.CallStarted())
    menu = listen_of(start.actions)
    assert menu.grammar == "free" and menu.end_silence_ms is None and menu.end_key is None
    account = policy.decide(start.context, ev.Utterance("a question about my account"))
    digits = listen_of(account.actions)
    assert digits.grammar == "digits" and digits.end_silence_ms == 1200 and digits.end_key == "#"
    assert digits.expect_digits == 10  # the collection's max_length: such a number is complete
    confirm = policy.decide(account.context, ev.Utterance("four seven one nine two two"))
    yes_no = listen_of(confirm.actions)
    assert yes_no.grammar == "yes_no" and yes_no.end_silence_ms == 300 and yes_no.end_key is None
    assert menu.expect_digits is None and yes_no.expect_digits is None


def test_node_value_first_then_settings_by_grammar() -> None:
    policy = DialogPolicy(parse_flow(FLOW))
    start = policy.decide(policy.new_context("c"), ev.CallStarted())
    assert listen_of(start.actions).end_silence_ms is None
    account = policy.decide(start.context, ev.Utterance("my account"))
    assert listen_of(account.actions).end_silence_ms == 1600
    confirm = policy.decide(account.context, ev.Utterance("four seven one nine two two"))
    assert confirm.context.confirming and listen_of(confirm.actions).end_silence_ms == 250
    quick = policy.decide(start.context, ev.Utterance("let me talk to an agent"))
    assert quick.context.node == "quick" and listen_of(quick.actions).end_silence_ms == 250


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("end_silence_ms: 1600", "end_silence_ms: 50", "nodes.account.end_silence_ms"),
        ("digits_end_silence_ms: 1100", "digits_end_silence_ms: 9000", "settings.digits_end_silence_ms"),
    ],
)
def test_end_silence_out_of_range_is_rejected_with_its_line(old: str, new: str, where: str) -> None:
    text = FLOW.replace(old, new)
    with pytest.raises(FlowError) as info:
        parse_flow(text)
    issue = info.value.issues[0]
    assert issue.location == where
    assert issue.line is not None and new in text.splitlines()[issue.line - 1]
