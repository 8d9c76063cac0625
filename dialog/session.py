"""One call's dialog, wired: events go through the policy, context and turns live in the context store,
and the call record is written when the call leaves the dialog (routed, transferred or hung up)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Literal

from prometheus_client import Counter

from dialog import actions as act
from dialog import events as ev
from dialog.context import ContextStore
from dialog.flow import Flow
from dialog.policy import Decision, DialogPolicy
from dialog.records import CallRecord, RecordStore
from dialog.redact import redact_turn
from dialog.state import CallContext, Turn
from dialog.storage import StoreError

log = logging.getLogger(__name__)

TURNS = Counter("voicenav_dialog_turns_total", "Caller events handled by the dialog, by event.", ["event"])
OUTCOMES = Counter(
    "voicenav_dialog_outcomes_total",
    "Calls that left the dialog, by outcome (route, transfer, hangup).",
    ["kind"],
)

_EVENT_NAMES = {
    ev.CallStarted: "call_started",
    ev.Utterance: "utterance",
    ev.Dtmf: "dtmf",
    ev.NoInput: "no_input",
    ev.Hangup: "hangup",
}


def _turn(flow: Flow, before: CallContext, event: ev.Event, decision: Decision) -> Turn:
    prompts = [a.wav or a.text or "" for a in decision.actions if isinstance(a, act.Play)]
    turn = Turn(
        at=time.time(),
        node=before.node,
        event=_EVENT_NAMES[type(event)],
        prompts=prompts,
        transcript=event.text if isinstance(event, ev.Utterance) else None,
        dtmf=event.digits if isinstance(event, ev.Dtmf) else None,
        intent=decision.intent,
        confidence=decision.confidence,
        asr_confidence=event.confidence if isinstance(event, ev.Utterance) else None,
        latency_ms=event.latency_ms if isinstance(event, ev.Utterance) else None,
    )
    # Turns are kept (context, then the call record) only with the caller's data masked.
    return redact_turn(turn, flow, before, decision.context)


class DialogSession:
    """Drive one call. Store failures surface as `dialog.storage.StoreError` from `start`/`handle`."""

    def __init__(
        self,
        call_id: str,
        policy: DialogPolicy,
        contexts: ContextStore,
        records: RecordStore,
        caller: str = "",
        transport: Literal["sip", "webrtc"] = "sip",
    ) -> None:
        self.call_id = call_id
        self._policy = policy
        self._contexts = contexts
        self._records = records
        self._caller = caller
        self._transport = transport

    async def start(self) -> list[act.Action]:
        """Create the call's context and return the opening actions (first prompt and listen)."""
        context = self._policy.new_context(self.call_id).model_copy(
            update={"caller": self._caller, "transport": self._transport, "started_at": time.time()}
        )
        await self._contexts.create(context)
        return await self.handle(ev.CallStarted())

    async def handle(self, event: ev.Event) -> list[act.Action]:
        """Apply one event atomically; returns the actions to carry out, in order."""
        decisions: list[Decision] = []

        def step(current: CallContext) -> tuple[CallContext, Turn | None]:
            # Re-run on a fresh context if another event for this call won the race; keep the last.
            decisions.clear()
            if current.ended:
                return current, None
            decision = self._policy.decide(current, event)
            decisions.append(decision)
            return decision.context, _turn(self._policy.flow, current, event, decision)

        context, _ = await self._contexts.update(self.call_id, step)
        if not decisions:
            return []
        TURNS.labels(_EVENT_NAMES[type(event)]).inc()
        if context.ended:
            kind = next(iter(context.outcome or {"hangup": ""}))
            OUTCOMES.labels(kind).inc()
            try:
                await self._save_record(context)
            except StoreError as exc:
                # The caller must still reach the queue; the lost record is already counted.
                log.error("call %s: call record not saved: %s", self.call_id, exc)
        return decisions[0].actions

    async def _save_record(self, context: CallContext) -> None:
        record = CallRecord(
            call_id=context.call_id,
            caller=context.caller,
            transport=context.transport,
            flow_id=context.flow_id,
            started_at=datetime.fromtimestamp(context.started_at, UTC),
            ended_at=datetime.now(UTC),
            turns=await self._contexts.turns(self.call_id),
            outcome=context.outcome,
        )
        await self._records.save(record)
