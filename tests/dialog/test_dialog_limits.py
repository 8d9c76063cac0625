"""Loops a caller can keep going forever end in the escalation target within the flow's limits."""

from __future__ import annotations

import pytest

from dialog import actions as act
from dialog import events as ev
from dialog.flow import FlowError, load_demo_flow, parse_flow
from dialog.policy import DialogPolicy
from dialog.state import CallContext


def _start(policy: DialogPolicy) -> CallContext:
    return policy.decide(policy.new_context("call-1"), ev.CallStarted()).context


def _to_confirmation(policy: DialogPolicy, ctx: CallContext) -> CallContext:
    for event in (ev.Dtmf("4"), ev.Utterance("one two three four five six seven eight")):
        ctx = policy.decide(ctx, event).context
    assert ctx.confirming
    return ctx


def test_a_caller_who_says_no_forever_is_escalated_within_the_limit() -> None:
    policy = DialogPolicy(load_demo_flow())
    limit = policy.flow.nodes["account_number"].max_rejections
    assert limit is not None
    ctx = _start(policy)
    turns = 0
    while not ctx.ended:
        ctx = _to_confirmation(policy, ctx) if not ctx.confirming else ctx
        decision = policy.decide(ctx, ev.Utterance("no"))
        ctx = decision.context
        turns += 1
        assert turns <= limit + 1, "still asking after the limit"
    assert turns == limit + 1
    assert ctx.outcome == {"route": "agent"}
    assert isinstance(decision.actions[-1], act.Route) and decision.actions[-1].queue == "agent"


def test_confirm_key_two_forever_is_bounded_per_call_across_nodes() -> None:
    flow = parse_flow(
        """
id: t
start: a
settings: {max_rejections: 5, max_call_rejections: 3, escalation: {route: humans}}
nodes:
  a:
    prompt: {text: "Number?"}
    confirm: {text: "I have {n}?"}
    grammar: digits
    collect: {slot: n, min_length: 2, max_length: 4, next: b}
  b:
    prompt: {text: "Other number?"}
    confirm: {text: "I have {m}?"}
    grammar: digits
    collect: {slot: m, min_length: 2, max_length: 4, next: {route: done}}
"""
    )
    policy = DialogPolicy(flow)
    ctx = _start(policy)
    for _ in range(3):  # three "no"s on the keypad: each asks again
        ctx = policy.decide(ctx, ev.Dtmf("12#")).context
        ctx = policy.decide(ctx, ev.Dtmf("2")).context
        assert not ctx.ended
    ctx = policy.decide(ctx, ev.Dtmf("12#")).context
    decision = policy.decide(ctx, ev.Dtmf("2"))
    assert decision.context.outcome == {"route": "humans"}
    assert decision.context.call_rejections == 4


def test_repeat_forever_hits_the_node_turn_limit_and_the_call_turn_limit() -> None:
    flow = parse_flow(
        """
id: t
start: menu
settings: {max_node_turns: 4, max_turns: 6, escalation: {route: agent}}
nodes:
  menu:
    prompt: {text: Say billing.}
    intents: {billing: {route: billing}}
    dtmf: {"1": menu2}
  menu2:
    prompt: {text: Say billing again.}
    max_turns: 50
    intents: {billing: {route: billing}}
"""
    )
    policy = DialogPolicy(flow)
    ctx = _start(policy)  # four answers in the node, the fifth event escalates
    repeats = 0
    while not ctx.ended:
        ctx = policy.decide(ctx, ev.Dtmf("*")).context
        repeats += 1
    assert repeats == 4 + 1 and ctx.outcome == {"route": "agent"}
    # A node that allows more still stops at the call's limit.
    ctx = policy.decide(_start(policy), ev.Dtmf("1")).context
    assert ctx.node == "menu2"
    while not ctx.ended:
        ctx = policy.decide(ctx, ev.NoInput() if ctx.turns % 2 else ev.Dtmf("*")).context
    assert ctx.turns == 6 and ctx.outcome == {"route": "agent"}


def test_an_escalation_node_the_caller_is_stuck_in_ends_the_call() -> None:
    flow = parse_flow(
        """
id: t
start: menu
settings: {max_retries: 0, escalation: {goto: help}, escalation_prompt: null}
nodes:
  menu:
    prompt: {text: Say billing.}
    intents: {billing: {route: billing}}
  help:
    prompt: {text: Say agent.}
    intents: {agent: {route: agent}}
"""
    )
    policy = DialogPolicy(flow)
    ctx = policy.decide(_start(policy), ev.Utterance("xyzzy")).context
    assert ctx.node == "help" and not ctx.ended
    decision = policy.decide(ctx, ev.Utterance("xyzzy"))
    assert decision.context.outcome == {"hangup": "retry-limit"}
    assert decision.actions == [act.Hangup("retry-limit")]


def test_limits_are_validated() -> None:
    with pytest.raises(FlowError, match="max_rejections"):
        parse_flow(
            "id: t\nstart: a\nnodes:\n  a:\n    prompt: {text: Hi}\n    max_rejections: 1\n"
            "    intents: {billing: {route: billing}}\n"
        )
    with pytest.raises(FlowError, match="max_turns"):
        parse_flow(
            "id: t\nstart: a\nsettings: {max_turns: 0}\nnodes:\n  a:\n    prompt: {text: Hi}\n"
            "    intents: {billing: {route: billing}}\n"
        )
