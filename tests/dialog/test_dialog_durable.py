"""Calls outlive Redis faults: a private redis-server is restarted empty between two turns and stopped
for seconds during a call; the call goes on, and its complete record and context end up in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from dialog import actions as act
from dialog import events as ev
from dialog.context import RedisContextStore
from dialog.durable import DROPPED, STORE_UP, DialogStores, open_dialog_stores
from dialog.flow import load_demo_flow
from dialog.policy import DialogPolicy
from dialog.records import CallRecord, RedisRecordStore
from dialog.session import DialogSession
from dialog.storage import StoreUnavailable
from tests.private_redis import PrivateRedis

PREFIX = "voicenav-test:durable:"


@pytest.fixture
async def stores(private_redis: PrivateRedis) -> AsyncIterator[DialogStores]:
    s = open_dialog_stores(private_redis.url, prefix=PREFIX)
    yield s
    await s.queue.aclose()


@pytest.fixture
async def direct(private_redis: PrivateRedis) -> AsyncIterator[tuple[RedisContextStore, RedisRecordStore]]:
    """Plain Redis stores on the private server: what another instance would read."""
    client = aioredis.Redis(host="127.0.0.1", port=private_redis.port, decode_responses=True)
    yield RedisContextStore(client, prefix=PREFIX), RedisRecordStore(client, prefix=PREFIX)
    await client.aclose()


def _session(stores: DialogStores, call_id: str) -> DialogSession:
    return DialogSession(call_id, DialogPolicy(load_demo_flow()), stores.contexts, stores.records, caller="+15550142")


async def _persisted(stores: DialogStores, direct, call_id: str, turns: int) -> CallRecord:
    assert await stores.queue.flush(10.0), "queued writes did not reach Redis"
    assert stores.healthy and STORE_UP._value.get() == 1
    contexts, records = direct
    record = await records.get(call_id)
    assert record is not None, "no record in Redis"
    assert record.outcome == {"route": "account"}
    assert [t.event for t in record.turns] == ["call_started", "utterance", "dtmf", "utterance"][:turns]
    context = await contexts.get(call_id)
    assert context is not None and context.ended and len(await contexts.turns(call_id)) == turns
    return record


async def test_redis_restarted_empty_between_two_turns(stores, direct, private_redis: PrivateRedis) -> None:
    session = _session(stores, "restart-1")
    await session.start()
    await session.handle(ev.Utterance("I forgot my password"))
    assert await stores.queue.flush(5.0)
    await private_redis.restart()  # comes back without the call's keys
    await session.handle(ev.Dtmf("471922#"))
    final = await session.handle(ev.Utterance("yes that's right"))
    assert final[-1] == act.Route("account")
    await _persisted(stores, direct, "restart-1", 4)


async def test_redis_down_for_seconds_during_a_call(stores, direct, private_redis: PrivateRedis) -> None:
    session = _session(stores, "outage-1")
    await session.start()
    await private_redis.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await session.handle(ev.Utterance("I forgot my password"))
    await session.handle(ev.Dtmf("471922#"))
    final = await session.handle(ev.Utterance("yes"))
    assert final[-1] == act.Route("account")
    assert loop.time() - started < 1.0  # the turns never waited on Redis
    await asyncio.sleep(0.5)
    assert not stores.healthy and STORE_UP._value.get() == 0
    assert stores.queue.pending("record") == 1 and stores.queue.pending("context") == 1
    record = await stores.records.get("outage-1")  # readable here while it waits
    assert record is not None and record.outcome == {"route": "account"}
    assert not await stores.queue.flush(0.2)
    await asyncio.sleep(2.0)  # a few seconds of outage in all
    await private_redis.start()
    await _persisted(stores, direct, "outage-1", 4)


async def test_queue_is_bounded_for_contexts_and_never_drops_a_record(private_redis: PrivateRedis, direct) -> None:
    stores = open_dialog_stores(private_redis.url, prefix=PREFIX, max_pending_contexts=2)
    try:
        await private_redis.stop()
        dropped = DROPPED.labels("context", "overflow")._value.get()
        sessions = [_session(stores, f"many-{i}") for i in range(5)]
        for s in sessions:
            await s.start()
        assert stores.queue.pending("context") == 2
        assert DROPPED.labels("context", "overflow")._value.get() == dropped + 3
        for s in sessions:  # every call routes while Redis is away: five records wait
            await s.handle(ev.Dtmf("4"))
            await s.handle(ev.Dtmf("471922#"))
            await s.handle(ev.Dtmf("1"))
        assert stores.queue.pending("record") == 5 and stores.queue.pending("context") == 2
        for i in range(5):  # each readable here while it waits
            assert (record := await stores.records.get(f"many-{i}")) is not None and record.outcome is not None
        await private_redis.start()
        assert await stores.queue.flush(10.0)
        _, records = direct
        assert sorted(r.call_id for r in await records.list(10)) == [f"many-{i}" for i in range(5)]
        # The context writes that overflowed are gone (counted): the calls ended before writing again.
        kept = [i for i in range(5) if await direct[0].get(f"many-{i}") is not None]
        assert kept == [3, 4]
        assert DROPPED.labels("context", "overflow")._value.get() == dropped + 3 + 5  # one per call coming back
    finally:
        await stores.queue.aclose()


async def test_probe_reports_an_outage_with_nothing_queued(stores, private_redis: PrivateRedis) -> None:
    assert await stores.queue.probe()
    await private_redis.stop()
    assert not await stores.queue.probe() and not stores.healthy
    await private_redis.start()
    assert await stores.queue.probe()


async def test_records_list_merges_what_waits_with_what_is_stored(stores, direct, private_redis: PrivateRedis) -> None:
    stored = CallRecord(call_id="a", caller="x", transport="sip", started_at=datetime.now(UTC) - timedelta(minutes=5))
    waiting = stored.model_copy(update={"call_id": "b", "started_at": datetime.now(UTC)})
    await private_redis.stop()
    await stores.records.save(waiting)
    with pytest.raises(StoreUnavailable):
        await stores.records.list(5)  # listing needs Redis; the waiting record alone would mislead
    await private_redis.start()
    await direct[1].save(stored)  # written by another instance
    assert [r.call_id for r in await stores.records.list(5)] == ["b", "a"]
    assert await stores.queue.flush(5.0)
    assert [r.call_id for r in await direct[1].list(5)] == ["b", "a"]
