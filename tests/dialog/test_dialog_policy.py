from __future__ import annotations

import pytest

from dialog import actions as act
from dialog import events as ev
from dialog.flow import load_demo_flow, parse_flow
from dialog.policy import Decision, DialogPolicy
from dialog.state import CallContext


@pytest.fixture(scope="module")
def policy() -> DialogPolicy:
    return DialogPolicy(load_demo_flow())


def run(policy: DialogPolicy, *events: ev.Event, ctx: CallContext | None = None) -> tuple[CallContext, Decision]:
    ctx = ctx or policy.new_context("call-1")
    decision = policy.decide(ctx, ev.CallStarted())
    ctx = decision.context
    for event in events:
        decision = policy.decide(ctx, event)
        ctx = decision.context
    return ctx, decision


def of(decision: Decision, kind: type) -> list:
    return [a for a in decision.actions if isinstance(a, kind)]


def test_call_start_plays_menu_and_listens_with_hotwords(policy: DialogPolicy) -> None:
    ctx, d = run(policy)
    assert ctx.node == "main_menu" and not ctx.ended
    assert isinstance(d.actions[0], act.Play) and "press 1 for billing" in (d.actions[0].text or "")
    listen = d.actions[-1]
    assert isinstance(listen, act.Listen)
    assert listen.grammar == "free" and "Kestrava router" in listen.hotwords
    assert listen.timeout_ms == 6000 and listen.barge_in


@pytest.mark.parametrize(
    ("text", "queue"),
    [
        ("I was charged twice this month", "billing"),
        ("my internet is not working", "tech_support"),
        ("I'd like to buy a new phone", "sales"),
        ("I want to cancel my subscription", "cancel"),
        ("let me talk to a real person", "agent"),
    ],
)
def test_speech_routes_in_one_utterance(policy: DialogPolicy, text: str, queue: str) -> None:
    ctx, d = run(policy, ev.Utterance(text))
    assert of(d, act.Route) == [act.Route(queue)]
    assert isinstance(d.actions[-1], act.Route)
    assert ctx.ended and ctx.outcome == {"route": queue}
    assert d.intent == queue and d.confidence is not None and d.confidence >= 0.5


@pytest.mark.parametrize(("key", "queue"), [("1", "billing"), ("2", "tech_support"), ("3", "sales"), ("0", "agent")])
def test_dtmf_routes(policy: DialogPolicy, key: str, queue: str) -> None:
    ctx, d = run(policy, ev.Dtmf(key))
    assert d.actions[-1] == act.Route(queue)
    assert ctx.outcome == {"route": queue}


def test_dtmf_4_collects_the_account_number(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"))
    assert ctx.node == "account_number" and not ctx.ended
    assert of(d, act.CollectDigits) == [act.CollectDigits(6, 10, "#", 5000)]
    assert of(d, act.Listen)[0].grammar == "digits"


@pytest.mark.parametrize(
    "entry",
    [
        [ev.Utterance("one two three four five six")],
        [ev.Dtmf("123456#")],
        [ev.Dtmf(d) for d in "123456#"],
        [ev.Dtmf("1234"), ev.Dtmf("56"), ev.NoInput()],  # inter-digit timeout ends the entry
        # A breath longer than the turn's pause: each group is an utterance, and they join up.
        [ev.Utterance("one two three"), ev.Utterance("four five six")],
        [ev.Utterance("12"), ev.Utterance("3, 4"), ev.Utterance("five six")],
        # Keyed and said digits make one entry, in either order.
        [ev.Dtmf("123"), ev.Utterance("four five six")],
        [ev.Utterance("one two three"), ev.Dtmf("456#")],
    ],
)
def test_account_number_confirmed_yes_routes_account(policy: DialogPolicy, entry: list[ev.Event]) -> None:
    ctx, d = run(policy, ev.Utterance("I need help with my account"), *entry)
    assert ctx.confirming and ctx.slots["account_number"] == "123456"
    assert of(d, act.Play)[0].text is not None and "1 2 3 4 5 6" in of(d, act.Play)[0].text
    assert of(d, act.Listen)[0].grammar == "yes_no"
    d = policy.decide(ctx, ev.Utterance("yeah that's right"))
    ctx = d.context
    assert d.actions[-1] == act.Route("account")
    assert ctx.outcome == {"route": "account"}


def test_account_number_rejected_is_asked_again(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("four seven one nine two two"), ev.Utterance("no"))
    assert ctx.node == "account_number" and not ctx.confirming
    assert "account_number" not in ctx.slots and ctx.failures == 0
    assert of(d, act.CollectDigits)
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("471922"), ev.Dtmf("2"), ev.Dtmf("654321#"), ev.Dtmf("1"))
    assert d.actions[-1] == act.Route("account")
    assert ctx.slots["account_number"] == "654321"


def test_too_short_number_is_a_no_match(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"), ev.Dtmf("123#"))
    assert ctx.node == "account_number" and ctx.failures == 1 and ctx.no_match_count == 1
    assert "six to ten digits" in (of(d, act.Play)[0].text or "")


def test_a_group_said_alone_waits_for_the_rest_until_the_digit_timeout(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("eight two six"))
    assert d.actions == [] and ctx.digit_buffer == "826" and ctx.no_match_count == 0
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("eight two six"), ev.NoInput())
    assert ctx.no_match_count == 1 and ctx.digit_buffer == ""
    assert "six to ten digits" in (of(d, act.Play)[0].text or "")
    # A number too long with the group before it is no number either; the entry starts afresh.
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("eight two six"), ev.Utterance("1234567890"))
    assert ctx.no_match_count == 1 and ctx.digit_buffer == "" and not ctx.confirming


def test_no_input_reprompts_then_escalates_to_agent(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.NoInput())
    assert "Are you still there" in (of(d, act.Play)[0].text or "")
    assert isinstance(d.actions[-1], act.Listen)
    ctx, d = run(policy, ev.NoInput(), ev.NoInput())
    assert isinstance(d.actions[-1], act.Listen) and ctx.failures == 2
    ctx, d = run(policy, ev.NoInput(), ev.NoInput(), ev.NoInput())
    assert d.actions[-1] == act.Route("agent")
    assert ctx.outcome == {"route": "agent"} and ctx.no_input_count == 3


def test_no_match_reprompts_then_escalates(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Utterance("purple elephants"))
    assert "didn't catch that" in (of(d, act.Play)[0].text or "")
    assert d.intent is None
    ctx, d = run(policy, ev.Utterance("purple elephants"), ev.Dtmf("9"), ev.Utterance("hmm"))
    assert d.actions[-1] == act.Route("agent") and ctx.no_match_count == 3
    assert "connect you with someone" in (of(d, act.Play)[0].text or "")


def test_mixed_failures_in_collection_escalate(policy: DialogPolicy) -> None:
    _ctx, d = run(policy, ev.Dtmf("4"), ev.NoInput(), ev.Utterance("banana"), ev.Dtmf("12#"))
    assert d.actions[-1] == act.Route("agent")


def test_repeat_replays_the_last_prompt(policy: DialogPolicy) -> None:
    _ctx, first = run(policy, ev.Dtmf("4"))
    ctx2, d = run(policy, ev.Dtmf("4"), ev.Utterance("can you say that again"))
    assert of(d, act.Play) == [p for p in of(first, act.Play) if "account number" in (p.text or "")]
    assert ctx2.node == "account_number" and ctx2.failures == 0
    assert of(d, act.CollectDigits)
    _, d = run(policy, ev.Dtmf("*"))
    assert "press 1 for billing" in (of(d, act.Play)[0].text or "")


def test_repeat_during_confirmation_replays_the_confirmation(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"), ev.Dtmf("123456#"), ev.Utterance("sorry what was that"))
    assert ctx.confirming and "1 2 3 4 5 6" in (of(d, act.Play)[0].text or "")


def test_go_back_returns_to_previous_node(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("4"), ev.Utterance("go back to the main menu"))
    assert ctx.node == "main_menu" and ctx.history == []
    assert "press 1 for billing" in (of(d, act.Play)[0].text or "")
    ctx, d = run(policy, ev.Dtmf("4"), ev.Dtmf("123456#"), ev.Utterance("go back"))
    assert ctx.node == "main_menu" and not ctx.confirming
    # From the first node, "back" starts it over.
    ctx, d = run(policy, ev.Utterance("go back"))
    assert ctx.node == "main_menu" and "press 1 for billing" in (of(d, act.Play)[0].text or "")


def test_events_after_the_end_do_nothing_and_hangup_records_reason(policy: DialogPolicy) -> None:
    ctx, d = run(policy, ev.Dtmf("1"), ev.Utterance("hello?"))
    assert d.actions == [] and ctx.outcome == {"route": "billing"}
    ctx, d = run(policy, ev.Hangup("bye"))
    assert ctx.ended and ctx.outcome == {"hangup": "bye"} and d.actions == []


def test_decide_does_not_mutate_its_input(policy: DialogPolicy) -> None:
    ctx, _ = run(policy)
    snapshot = ctx.model_dump()
    policy.decide(ctx, ev.Dtmf("4"))
    assert ctx.model_dump() == snapshot


def test_product_slot_is_remembered_across_turns() -> None:
    flow = parse_flow(
        """
id: p
start: menu
entities: {product: [Kestrava router, Velmont Fiber]}
nodes:
  menu:
    prompt: {text: "How can I help?"}
    intents: {billing: more, tech_support: more}
  more:
    prompt: {text: "Anything else about your {product}?"}
    intents: {tech_support: {route: tech_support}}
"""
    )
    policy = DialogPolicy(flow)
    ctx, d = run(policy, ev.Utterance("my kestrel va router was billed twice"))
    assert ctx.slots["product"] == "Kestrava router"
    assert of(d, act.Play)[0].text == "Anything else about your Kestrava router?"
    d = policy.decide(ctx, ev.Utterance("the same one keeps dropping the connection"))
    assert d.slots["product"] == "Kestrava router" and d.actions[-1] == act.Route("tech_support")


def test_transfer_hangup_and_then_nodes() -> None:
    flow = parse_flow(
        """
id: t
start: menu
settings: {max_retries: 0, escalation: {hangup: gave-up}, escalation_prompt: {text: Goodbye}}
nodes:
  menu:
    prompt: {text: Hi}
    dtmf:
      "1": {transfer: "sip:desk@example.org"}
      "2": bye
  bye:
    prompt: {wav: /prompts/bye.wav}
    then: {hangup: done}
"""
    )
    policy = DialogPolicy(flow)
    ctx, d = run(policy, ev.Dtmf("1"))
    assert d.actions == [act.Transfer("sip:desk@example.org")] and ctx.outcome == {"transfer": "sip:desk@example.org"}
    ctx, d = run(policy, ev.Dtmf("2"))
    assert d.actions == [act.Play(None, "/prompts/bye.wav", True), act.Hangup("done")]
    assert ctx.outcome == {"hangup": "done"}
    ctx, d = run(policy, ev.NoInput())
    assert d.actions == [act.Play("Goodbye", None, True), act.Hangup("gave-up")]
