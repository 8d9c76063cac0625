from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dialog import actions as act
from dialog import events as ev
from dialog.context import ContextStore, MemoryContextStore, RedisContextStore
from dialog.flow import load_demo_flow
from dialog.policy import DialogPolicy
from dialog.records import MemoryRecordStore, RecordStore, RedisRecordStore
from dialog.session import DialogSession
from dialog.storage import StoreUnavailable

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "memory"])
async def stores(request, prefix: str) -> AsyncIterator[tuple[ContextStore, RecordStore]]:
    if request.param == "memory":
        yield MemoryContextStore(), MemoryRecordStore()
        return
    client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    yield RedisContextStore(client, prefix=prefix), RedisRecordStore(client, prefix=prefix)
    await client.aclose()


@pytest.fixture(scope="module")
def policy() -> DialogPolicy:
    return DialogPolicy(load_demo_flow())


async def test_account_call_end_to_end(stores, policy: DialogPolicy) -> None:
    contexts, records = stores
    session = DialogSession("call-42", policy, contexts, records, caller="+15550142", transport="webrtc")
    opening = await session.start()
    assert isinstance(opening[0], act.Play) and isinstance(opening[-1], act.Listen)
    await session.handle(ev.Utterance("I forgot my password", confidence=0.91, latency_ms=280.0))
    await session.handle(ev.Dtmf("471922#"))
    final = await session.handle(ev.Utterance("yes that's right", confidence=0.97, latency_ms=190.0))
    assert final[-1] == act.Route("account")
    # The transport hangs up after the transfer to the queue: nothing more happens.
    assert await session.handle(ev.Hangup("bye")) == []

    record = await records.get("call-42")
    assert record is not None
    assert record.caller == "+15550142" and record.transport == "webrtc" and record.flow_id == "demo"
    assert record.outcome == {"route": "account"}
    assert record.ended_at is not None and record.ended_at >= record.started_at
    assert [t.event for t in record.turns] == ["call_started", "utterance", "dtmf", "utterance"]
    spoken = record.turns[1]
    assert spoken.transcript == "I forgot my password" and spoken.intent == "account"
    assert spoken.latency_ms == 280.0 and spoken.asr_confidence == 0.91
    assert spoken.confidence is not None and spoken.confidence >= 0.5
    assert spoken.node == "main_menu" and any("account number" in p for p in spoken.prompts)
    assert record.turns[2].dtmf == "******#" and record.turns[2].node == "account_number"  # masked
    assert [r.call_id for r in await records.list(5)] == ["call-42"]


async def test_caller_hangup_is_recorded(stores, policy: DialogPolicy) -> None:
    contexts, records = stores
    session = DialogSession("call-7", policy, contexts, records, caller="sip:alice@example.org")
    await session.start()
    await session.handle(ev.NoInput())
    assert await session.handle(ev.Hangup("bye")) == []
    record = await records.get("call-7")
    assert record is not None and record.outcome == {"hangup": "bye"} and record.transport == "sip"
    assert [t.event for t in record.turns] == ["call_started", "no_input", "hangup"]


async def test_session_resumes_from_stored_context(stores, policy: DialogPolicy) -> None:
    """A second session object for the same call (e.g. after a restart) continues where it was."""
    contexts, records = stores
    await DialogSession("call-9", policy, contexts, records).start()
    resumed = DialogSession("call-9", policy, contexts, records)
    actions = await resumed.handle(ev.Dtmf("2"))
    assert actions[-1] == act.Route("tech_support")


async def test_record_store_outage_still_routes_the_caller(policy: DialogPolicy, dead_redis) -> None:
    records = RedisRecordStore(dead_redis, prefix="unused:")
    session = DialogSession("call-x", policy, MemoryContextStore(), records)
    await session.start()
    assert (await session.handle(ev.Dtmf("3")))[-1] == act.Route("sales")


async def test_context_store_outage_is_a_typed_error(policy: DialogPolicy, dead_redis) -> None:
    contexts = RedisContextStore(dead_redis, prefix="unused:")
    session = DialogSession("call-y", policy, contexts, MemoryRecordStore())
    with pytest.raises(StoreUnavailable):
        await session.start()
