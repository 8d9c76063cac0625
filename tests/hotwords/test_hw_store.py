from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from hotwords.schema import Entry, HotwordListIn
from hotwords.store import HotwordStore, MemoryHotwordStore, NotFound, RedisHotwordStore, VersionConflict


def content(*phrases: str, scope: str = "global") -> HotwordListIn:
    return HotwordListIn(scope=scope, entries=[Entry(phrase=p) for p in phrases])


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[HotwordStore]:
    if request.param == "redis":
        backend: HotwordStore = RedisHotwordStore(
            aioredis.Redis.from_url("redis://127.0.0.1:6379/0"), prefix, audit_cap=5
        )
    else:
        backend = MemoryHotwordStore(audit_cap=5)
    yield backend
    await backend.close()


async def test_versions_are_kept_and_current_moves(store: HotwordStore) -> None:
    first = await store.put("products", content("Zentrix Unlimited"), "alice")
    second = await store.put("products", content("Zentrix Unlimited", "Kestrava router"), "bob")
    assert (first.version, second.version) == (1, 2)
    assert (await store.get("products")) == second
    assert (await store.get("products", 1)) == first
    assert await store.versions("products") == [1, 2]
    assert await store.current_versions() == {"products": 2}
    assert [r.name for r in await store.list_current()] == ["products"]
    assert second.updated_by == "bob" and second.updated_at >= first.updated_at


async def test_rollback_writes_a_new_version_equal_to_the_old(store: HotwordStore) -> None:
    await store.put("products", content("Zentrix Unlimited"), "alice")
    await store.put("products", content("Kestrava router", scope="tenant:acme"), "alice")
    rolled = await store.rollback("products", 1, "carol")
    assert rolled.version == 3
    assert [e.phrase for e in rolled.entries] == ["Zentrix Unlimited"] and rolled.scope == "global"
    assert await store.versions("products") == [1, 2, 3]
    with pytest.raises(NotFound):
        await store.rollback("products", 9, "carol")


async def test_delete_keeps_history_and_audit(store: HotwordStore) -> None:
    await store.put("products", content("Zentrix Unlimited"), "alice")
    assert await store.delete("products", "bob") == 1
    assert await store.get("products") is None
    assert await store.current_versions() == {}
    assert (await store.get("products", 1)) is not None
    with pytest.raises(NotFound):
        await store.delete("products", "bob")
    again = await store.put("products", content("NovaPay wallet"), "alice")
    # Numbering continues (the delete used number 2): a version number never changes meaning.
    assert again.version == 3
    trail = await store.audit("products")
    assert [(r.action, r.by, r.old_version, r.new_version) for r in trail] == [
        ("put", "alice", None, 3),
        ("delete", "bob", 1, None),
        ("put", "alice", None, 1),
    ]


async def test_audit_is_capped(store: HotwordStore) -> None:
    for i in range(8):
        await store.put("products", content(f"phrase {i}"), "alice")
    trail = await store.audit("products", limit=100)
    assert len(trail) == 5
    assert trail[0].new_version == 8


async def test_optimistic_concurrency(store: HotwordStore) -> None:
    await store.put("products", content("Zentrix"), "alice", expected_version=0)
    with pytest.raises(VersionConflict) as info:
        await store.put("products", content("Kestrava"), "bob", expected_version=0)
    assert info.value.current == 1
    await store.put("products", content("Kestrava"), "bob", expected_version=1)
    with pytest.raises(VersionConflict):
        await store.delete("products", "bob", expected_version=1)
    assert (await store.get("products")).version == 2  # type: ignore[union-attr]


async def test_changes_are_announced(store: HotwordStore) -> None:
    subscription = await store.subscribe()
    try:
        await store.put("products", content("Zentrix"), "alice")
        await store.delete("products", "alice")
        first = await subscription.get(wait_seconds=2.0)
        second = await subscription.get(wait_seconds=2.0)
        assert (first.name, first.version) == ("products", 1)  # type: ignore[union-attr]
        assert (second.name, second.version) == ("products", None)  # type: ignore[union-attr]
        assert await subscription.get(wait_seconds=0.05) is None
    finally:
        await subscription.close()


async def test_redis_layout_under_the_prefix(prefix: str, redis_client: aioredis.Redis) -> None:
    store = RedisHotwordStore(redis_client, prefix)
    await store.put("products", content("Zentrix"), "alice")
    keys = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{prefix}:*")])
    assert keys == [
        f"{prefix}:audit:products",
        f"{prefix}:current",
        f"{prefix}:list:products:seq",
        f"{prefix}:list:products:v",
    ]


def test_memory_store_says_it_is_not_shared(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="hotwords.store"):
        MemoryHotwordStore()
    assert "not shared between replicas" in caplog.text
