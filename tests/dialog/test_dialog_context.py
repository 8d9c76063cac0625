from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dialog.context import (
    UPDATE_CONFLICTS,
    CallExists,
    ContextStore,
    MemoryContextStore,
    RedisContextStore,
    UnknownCall,
    open_context_store,
)
from dialog.state import CallContext, Turn
from dialog.storage import STORE_ERRORS, StoreDataError, StoreUnavailable

pytestmark = pytest.mark.redis


def _client() -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)


@pytest.fixture(params=["redis", "memory"])
async def store(request, prefix: str) -> AsyncIterator[ContextStore]:
    if request.param == "memory":
        yield MemoryContextStore(ttl_s=60)
        return
    client = _client()
    yield RedisContextStore(client, prefix=prefix, ttl_s=60)
    await client.aclose()


def _ctx(call_id: str = "c1") -> CallContext:
    return CallContext(call_id=call_id, flow_id="demo", caller="+15550100", transport="webrtc")


def _add_slot(name: str):
    def step(ctx: CallContext) -> tuple[CallContext, Turn | None]:
        slots = {**ctx.slots, name: "x"}
        turn = Turn(at=time.time(), node=ctx.node, event="utterance", transcript=name)
        return ctx.model_copy(update={"slots": slots}), turn

    return step


async def test_create_get_update_turns(store: ContextStore) -> None:
    created = await store.create(_ctx())
    assert created.version == 1
    with pytest.raises(CallExists):
        await store.create(_ctx())
    got = await store.get("c1")
    assert got == created and got.caller == "+15550100"
    new, turn = await store.update("c1", _add_slot("a"))
    assert new.version == 2 and new.slots == {"a": "x"}
    assert turn is not None and turn.seq == 2
    assert await store.get("c1") == new
    assert [t.transcript for t in await store.turns("c1")] == ["a"]
    assert await store.get("nobody") is None
    with pytest.raises(UnknownCall):
        await store.update("nobody", _add_slot("a"))
    await store.delete("c1")
    assert await store.get("c1") is None and await store.turns("c1") == []


async def test_ttl_is_set_and_refreshed(store: ContextStore) -> None:
    await store.create(_ctx())
    ttl = await store.ttl("c1")
    assert ttl is not None and 55 < ttl <= 60
    await store.update("c1", _add_slot("a"))
    ttl = await store.ttl("c1")
    assert ttl is not None and 55 < ttl <= 60
    assert await store.ttl("nobody") is None


async def test_redis_turn_list_has_the_same_ttl(prefix: str, redis_client: aioredis.Redis) -> None:
    store = RedisContextStore(redis_client, prefix=prefix, ttl_s=30)
    await store.create(_ctx())
    await store.update("c1", _add_slot("a"))
    assert 25_000 < await redis_client.pttl(f"{prefix}call:c1:turns") <= 30_000
    assert await redis_client.type(f"{prefix}call:c1") == "hash"


async def test_expiry(store: ContextStore, prefix: str) -> None:
    client = _client()
    short: ContextStore = (
        MemoryContextStore(ttl_s=0.2)
        if isinstance(store, MemoryContextStore)
        else RedisContextStore(client, prefix=prefix, ttl_s=0.2)
    )
    try:
        await short.create(_ctx("brief"))
        assert await short.get("brief") is not None
        await asyncio.sleep(0.35)
        assert await short.get("brief") is None
        with pytest.raises(UnknownCall):
            await short.update("brief", _add_slot("late"))
    finally:
        await client.aclose()


async def test_concurrent_updates_lose_nothing(store: ContextStore) -> None:
    """50 events for one call racing from two clients: every slot and every turn survives."""
    await store.create(_ctx())
    if isinstance(store, RedisContextStore):
        other_client = _client()
        second = RedisContextStore(other_client, prefix=store._prefix, ttl_s=60)
        stores: list[ContextStore] = [store, second]
    else:
        stores = [store]
    try:
        names = [f"s{i}" for i in range(50)]
        conflicts_before = UPDATE_CONFLICTS._value.get()
        updates = (stores[i % len(stores)].update("c1", _add_slot(n)) for i, n in enumerate(names))
        results = await asyncio.wait_for(asyncio.gather(*updates), timeout=20)
        if len(stores) == 2:
            # The writers really did collide (and were retried), so the race was exercised.
            assert UPDATE_CONFLICTS._value.get() > conflicts_before
    finally:
        if len(stores) == 2:
            await other_client.aclose()
    final = await store.get("c1")
    assert final is not None
    assert set(final.slots) == set(names)
    assert final.version == 51
    turns = await store.turns("c1")
    assert sorted(t.transcript for t in turns) == sorted(names)
    assert [t.seq for t in turns] == list(range(2, 52))
    assert sorted(r[0].version for r in results) == list(range(2, 52))


async def test_a_new_store_instance_reads_the_same_call(prefix: str) -> None:
    """What a restarted process sees: a fresh client and store find the call as it was left."""
    first_client = _client()
    first = RedisContextStore(first_client, prefix=prefix, ttl_s=60)
    await first.create(_ctx())
    await first.update("c1", _add_slot("before-restart"))
    await first_client.aclose()

    second_client = _client()
    try:
        second = RedisContextStore(second_client, prefix=prefix, ttl_s=60)
        got = await second.get("c1")
        assert got is not None and got.slots == {"before-restart": "x"} and got.version == 2
        new, _ = await second.update("c1", _add_slot("after"))
        assert new.version == 3 and set(new.slots) == {"before-restart", "after"}
        assert [t.transcript for t in await second.turns("c1")] == ["before-restart", "after"]
    finally:
        await second_client.aclose()


async def test_redis_outage_raises_typed_error_and_counts(dead_redis) -> None:
    store = RedisContextStore(dead_redis, prefix="unused:", ttl_s=60)
    before = STORE_ERRORS.labels("context", "get", "unavailable")._value.get()
    with pytest.raises(StoreUnavailable, match="Redis unavailable"):
        await store.get("c1")
    with pytest.raises(StoreUnavailable):
        await store.create(_ctx())
    with pytest.raises(StoreUnavailable):
        await store.update("c1", _add_slot("a"))
    assert STORE_ERRORS.labels("context", "get", "unavailable")._value.get() == before + 2


async def test_corrupt_stored_context_is_a_typed_error(prefix: str, redis_client: aioredis.Redis) -> None:
    await redis_client.hset(f"{prefix}call:bad", mapping={"call_id": "not json"})
    with pytest.raises(StoreDataError):
        await RedisContextStore(redis_client, prefix=prefix).get("bad")


def test_embedded_store_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="dialog.context"):
        store = open_context_store(None)
    assert isinstance(store, MemoryContextStore)
    assert any("not shared" in r.message and r.levelno == logging.WARNING for r in caplog.records)
