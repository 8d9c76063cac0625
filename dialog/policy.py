"""The dialog state machine: (flow, context, event) -> (new context, actions). Pure logic, no I/O."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

from dialog import actions as act
from dialog import events as ev
from dialog.flow import Flow, Node, Prompt, Target
from dialog.intents import IntentRecognizer
from dialog.redact import secret_slots
from dialog.state import HISTORY_LIMIT, CallContext, PromptRef

_MAX_HOPS = 16  # `then` chains are checked acyclic at load time; this bounds a decision regardless


@dataclass(frozen=True, slots=True)
class Decision:
    context: CallContext
    actions: list[act.Action]
    intent: str | None = None
    confidence: float | None = None
    slots: dict[str, str] = field(default_factory=dict)


class _SlotValues(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def _speakable(value: str) -> str:
    # "471922" is read as a number by a synthesizer; spaced digits are read one by one.
    return " ".join(value) if value.isdigit() else value


def render(
    prompt: Prompt | PromptRef, slots: Mapping[str, str], barge_in: bool, secret: frozenset[str] = frozenset()
) -> act.Play:
    """The Play for `prompt` with slot values filled in; private when it reads a `secret` slot back."""
    text = None
    private = False
    if prompt.text is not None:
        values = _SlotValues({k: _speakable(v) for k, v in slots.items()})
        text = string.Formatter().vformat(prompt.text, (), values)
        private = any(name in secret for _, name, _, _ in string.Formatter().parse(prompt.text) if name)
    return act.Play(text=text, wav=prompt.wav, barge_in=barge_in, private=private)


class DialogPolicy:
    def __init__(self, flow: Flow, recognizer: IntentRecognizer | None = None) -> None:
        self.flow = flow
        self.recognizer = recognizer or IntentRecognizer(flow.entities)
        self._secret = secret_slots(flow)

    def new_context(self, call_id: str) -> CallContext:
        return CallContext(call_id=call_id, flow_id=self.flow.id)

    def decide(self, context: CallContext, event: ev.Event) -> Decision:
        """The actions for `event` and the context after it; `context` itself is not modified."""
        ctx = context.model_copy(deep=True)
        if isinstance(event, ev.Hangup):
            if ctx.ended:
                return Decision(ctx, [])
            ctx.ended = True
            ctx.outcome = {"hangup": event.reason}
            return Decision(ctx, [])
        if ctx.ended:
            return Decision(ctx, [])
        if isinstance(event, ev.CallStarted) or ctx.node is None:
            out: list[act.Action] = []
            self._enter(ctx, self.flow.start, out, push=False)
            return Decision(ctx, out)
        limit = self._turn_limit(ctx)
        if limit is not None:
            escalation: list[act.Action] = []
            self._escalate(ctx, escalation, limit)
            return Decision(ctx, escalation)
        node_before = ctx.node
        if isinstance(event, ev.Utterance):
            decision = self._utterance(ctx, event)
        elif isinstance(event, ev.Dtmf):
            decision = self._dtmf(ctx, event.digits)
        else:
            decision = self._no_input(ctx)
        if decision.actions:  # a key added to the digit buffer is not an answer
            ctx.turns += 1
            if ctx.node == node_before:  # entering a node starts its count, as at the call's start
                ctx.node_turns += 1
        return decision

    def _turn_limit(self, ctx: CallContext) -> str | None:
        """Why this call may not take another turn, if it may not."""
        s = self.flow.settings
        if ctx.turns >= s.max_turns:
            return "turn-limit"
        node = self._node(ctx)
        if ctx.node_turns >= (node.max_turns or s.max_node_turns):
            return "node-turn-limit"
        return None

    # -- events -----------------------------------------------------------------------------------

    def _utterance(self, ctx: CallContext, event: ev.Utterance) -> Decision:
        node = self._node(ctx)
        if ctx.confirming:
            grammar, candidates = "yes_no", {"yes", "no"}
        elif node.collect is not None:
            grammar, candidates = "digits", {"digits"}
        else:
            grammar, candidates = node.grammar, set(node.intents)
        result = self.recognizer.recognize(event.text, grammar, candidates, ctx.slots)
        memory = {k: v for k, v in result.slots.items() if k != "digits"}
        ctx.slots.update(memory)
        out: list[act.Action] = []

        def decided() -> Decision:
            return Decision(ctx, out, result.intent, result.confidence, dict(result.slots))

        if result.intent is None or result.confidence < self.flow.settings.min_confidence:
            self._no_match(ctx, out)
        elif result.intent == "repeat":
            self._repeat(ctx, out)
        elif result.intent == "back":
            self._back(ctx, out)
        elif ctx.confirming:
            self._confirmed(ctx, result.intent == "yes", out)
        elif node.collect is not None:
            self._said_digits(ctx, result.slots.get("digits", ""), out)
        elif result.intent in node.intents:
            self._execute(ctx, node.intents[result.intent], out)
        else:
            self._no_match(ctx, out)
        return decided()

    def _dtmf(self, ctx: CallContext, digits: str) -> Decision:
        s = self.flow.settings
        out: list[act.Action] = []
        for i, key in enumerate(digits):
            node = self._node(ctx)
            before = (ctx.node, ctx.confirming, ctx.ended)
            collecting = node.collect if not ctx.confirming else None
            if collecting is not None and key == collecting.terminator:
                self._collected(ctx, ctx.digit_buffer, out)
            elif collecting is not None and key.isdigit():
                ctx.digit_buffer += key
                if len(ctx.digit_buffer) >= collecting.max_length:
                    self._collected(ctx, ctx.digit_buffer, out)
            elif key == s.repeat_key:
                self._repeat(ctx, out)
            elif key == s.back_key:
                self._back(ctx, out)
            elif ctx.confirming and key in (s.confirm_yes_key, s.confirm_no_key):
                self._confirmed(ctx, key == s.confirm_yes_key, out)
            elif collecting is None and not ctx.confirming and key in node.dtmf:
                self._execute(ctx, node.dtmf[key], out)
            else:
                self._no_match(ctx, out)
            # Keys typed ahead after a change of node or state belong to the old prompt; drop them.
            if (ctx.node, ctx.confirming, ctx.ended) != before and i < len(digits) - 1:
                break
        return Decision(ctx, out, None, None)

    def _no_input(self, ctx: CallContext) -> Decision:
        node = self._node(ctx)
        out: list[act.Action] = []
        if node.collect is not None and not ctx.confirming and ctx.digit_buffer:
            # The inter-digit timeout ends an entry made without the terminator.
            self._collected(ctx, ctx.digit_buffer, out)
            return Decision(ctx, out)
        ctx.no_input_count += 1
        if self._failed(ctx, out):
            return Decision(ctx, out)
        s = self.flow.settings
        if ctx.confirming:
            prompts: list[Prompt | PromptRef] = [s.no_input, self._confirm_prompt(node)]
        elif node.no_input is not None:
            prompts = [node.no_input]
        else:
            prompts = [s.no_input, node.prompt]
        self._play(ctx, prompts, out)
        self._listen(ctx, out)
        return Decision(ctx, out)

    # -- steps ------------------------------------------------------------------------------------

    def _node(self, ctx: CallContext) -> Node:
        assert ctx.node is not None
        return self.flow.nodes[ctx.node]

    def _barge_in(self, ctx: CallContext) -> bool:
        node = self._node(ctx)
        return self.flow.settings.barge_in if node.barge_in is None else node.barge_in

    def _play(self, ctx: CallContext, prompts: list[Prompt | PromptRef], out: list[act.Action]) -> None:
        ctx.last_prompts = [PromptRef(text=p.text, wav=p.wav) for p in prompts]
        barge_in = self._barge_in(ctx)
        out.extend(render(p, ctx.slots, barge_in, self._secret) for p in prompts)

    def _listen(self, ctx: CallContext, out: list[act.Action]) -> None:
        node = self._node(ctx)
        s = self.flow.settings
        timeout = node.timeout_ms or s.no_input_timeout_ms
        barge_in = self._barge_in(ctx)
        if ctx.confirming:
            out.append(act.Listen("yes_no", (), (), timeout, barge_in, s.yes_no_end_silence_ms))
        elif node.collect is not None:
            c = node.collect
            silence = node.end_silence_ms or s.digits_end_silence_ms
            listen = act.Listen(
                "digits", node.phrases, node.hotword_lists, timeout, barge_in, silence, c.terminator, c.max_length
            )
            out.append(listen)
            out.append(act.CollectDigits(c.min_length, c.max_length, c.terminator, s.digit_timeout_ms))
        else:
            silence = node.end_silence_ms or self._grammar_end_silence(node.grammar)
            out.append(act.Listen(node.grammar, node.phrases, node.hotword_lists, timeout, barge_in, silence))

    def _grammar_end_silence(self, grammar: str) -> int | None:
        s = self.flow.settings
        return {"digits": s.digits_end_silence_ms, "yes_no": s.yes_no_end_silence_ms}.get(grammar)

    def _enter(self, ctx: CallContext, name: str, out: list[act.Action], push: bool, hops: int = 0) -> None:
        if push and ctx.node is not None and ctx.node != name:
            ctx.history = [*ctx.history, ctx.node][-HISTORY_LIMIT:]
        ctx.node = name
        ctx.failures = 0
        ctx.node_turns = 0
        ctx.rejections = 0
        ctx.confirming = False
        ctx.digit_buffer = ""
        node = self.flow.nodes[name]
        self._play(ctx, [node.prompt], out)
        if node.then is not None:
            self._execute(ctx, node.then, out, hops + 1)
        else:
            self._listen(ctx, out)

    def _execute(self, ctx: CallContext, target: Target, out: list[act.Action], hops: int = 0) -> None:
        if target.say is not None:
            out.append(render(target.say, ctx.slots, self._barge_in(ctx), self._secret))
        if target.goto is not None:
            if hops >= _MAX_HOPS:
                self._end(ctx, out, act.Hangup("flow-loop"), {"hangup": "flow-loop"})
            else:
                self._enter(ctx, target.goto, out, push=True, hops=hops)
        elif target.route is not None:
            self._end(ctx, out, act.Route(target.route), {"route": target.route})
        elif target.transfer is not None:
            self._end(ctx, out, act.Transfer(target.transfer), {"transfer": target.transfer})
        elif target.hangup is not None:
            self._end(ctx, out, act.Hangup(target.hangup), {"hangup": target.hangup})

    @staticmethod
    def _end(ctx: CallContext, out: list[act.Action], action: act.Action, outcome: dict[str, str]) -> None:
        out.append(action)
        ctx.ended = True
        ctx.outcome = outcome

    def _failed(self, ctx: CallContext, out: list[act.Action]) -> bool:
        """Count a failure; past `max_retries` hand the caller to the escalation target."""
        ctx.failures += 1
        if ctx.failures <= self.flow.settings.max_retries:
            return False
        self._escalate(ctx, out, "retry-limit")
        return True

    def _escalate(self, ctx: CallContext, out: list[act.Action], reason: str) -> None:
        """Hand the caller to the escalation target; when that is a node the caller already got stuck in
        once, end the call instead of going round again."""
        s = self.flow.settings
        if ctx.escalated and s.escalation.goto is not None:
            self._end(ctx, out, act.Hangup(reason), {"hangup": reason})
            return
        ctx.escalated = True
        if s.escalation_prompt is not None:
            out.append(render(s.escalation_prompt, ctx.slots, self._barge_in(ctx), self._secret))
        self._execute(ctx, s.escalation, out)

    def _no_match(self, ctx: CallContext, out: list[act.Action]) -> None:
        ctx.no_match_count += 1
        ctx.digit_buffer = ""
        if self._failed(ctx, out):
            return
        node = self._node(ctx)
        s = self.flow.settings
        if ctx.confirming:
            prompts: list[Prompt | PromptRef] = [s.no_match, self._confirm_prompt(node)]
        elif node.no_match is not None:
            prompts = [node.no_match]
        else:
            prompts = [s.no_match, node.prompt]
        self._play(ctx, prompts, out)
        self._listen(ctx, out)

    def _repeat(self, ctx: CallContext, out: list[act.Action]) -> None:
        prompts: list[Prompt | PromptRef] = list(ctx.last_prompts) or [self._node(ctx).prompt]
        ctx.digit_buffer = ""
        self._play(ctx, prompts, out)
        self._listen(ctx, out)

    def _back(self, ctx: CallContext, out: list[act.Action]) -> None:
        if ctx.history:
            previous = ctx.history[-1]
            ctx.history = ctx.history[:-1]
            self._enter(ctx, previous, out, push=False)
        else:
            # Already at the first node: going back means hearing it again from the top.
            assert ctx.node is not None
            self._enter(ctx, ctx.node, out, push=False)

    @staticmethod
    def _confirm_prompt(node: Node) -> Prompt:
        assert node.confirm is not None
        return node.confirm

    def _said_digits(self, ctx: CallContext, digits: str, out: list[act.Action]) -> None:
        """Digits said join the entry as keyed ones do. A caller who breathes longer than the turn's
        pause between digit groups ("826 ‖ 4053") says the number in two utterances, or keys part of
        it: a group alone is no number to reject, and the next must not replace it. An entry still
        shorter than the number waits for more, until the inter-digit timeout ends it."""
        node = self._node(ctx)
        assert node.collect is not None
        entry = ctx.digit_buffer + digits
        if len(entry) < node.collect.min_length:
            ctx.digit_buffer = entry
            return
        self._collected(ctx, entry, out)

    def _collected(self, ctx: CallContext, digits: str, out: list[act.Action]) -> None:
        node = self._node(ctx)
        c = node.collect
        assert c is not None
        ctx.digit_buffer = ""
        if not (c.min_length <= len(digits) <= c.max_length):
            self._no_match(ctx, out)
            return
        ctx.slots[c.slot] = digits
        if node.confirm is None:
            self._execute(ctx, c.next, out)
            return
        ctx.confirming = True
        self._play(ctx, [node.confirm], out)
        self._listen(ctx, out)

    def _confirmed(self, ctx: CallContext, yes: bool, out: list[act.Action]) -> None:
        node = self._node(ctx)
        c = node.collect
        assert c is not None
        ctx.confirming = False
        if yes:
            self._execute(ctx, c.next, out)
            return
        # A "no" is a correction, not a failure: ask for the number again, a bounded number of times.
        ctx.slots.pop(c.slot, None)
        ctx.rejections += 1
        ctx.call_rejections += 1
        s = self.flow.settings
        node_limit = s.max_rejections if node.max_rejections is None else node.max_rejections
        if ctx.rejections > node_limit or ctx.call_rejections > s.max_call_rejections:
            self._escalate(ctx, out, "rejection-limit")
            return
        self._play(ctx, [node.prompt], out)
        self._listen(ctx, out)
