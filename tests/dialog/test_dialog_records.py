from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from dialog.records import (
    MAX_LIMIT,
    CallRecord,
    MemoryRecordStore,
    RecordStore,
    RedisRecordStore,
    setup_routes,
)
from dialog.state import Turn

pytestmark = pytest.mark.redis

T0 = datetime.now(UTC) - timedelta(minutes=30)


def _record(i: int, started: datetime | None = None) -> CallRecord:
    start = started or T0 + timedelta(seconds=i)
    return CallRecord(
        call_id=f"call-{i}",
        caller=f"+1555010{i:02d}",
        transport="sip" if i % 2 else "webrtc",
        flow_id="demo",
        started_at=start,
        ended_at=start + timedelta(seconds=20),
        turns=[
            Turn(at=start.timestamp(), node=None, event="call_started", prompts=["Thanks for calling."]),
            Turn(
                at=start.timestamp() + 5,
                node="main_menu",
                event="utterance",
                transcript="I was charged twice this month",
                intent="billing",
                confidence=0.98,
                asr_confidence=0.9,
                latency_ms=310.0,
            ),
        ],
        outcome={"route": "billing"} if i % 3 else {"hangup": "caller"},
    )


@pytest.fixture(params=["redis", "memory"])
async def store_factory(request, prefix: str) -> AsyncIterator:
    clients: list[aioredis.Redis] = []

    def make(retention_s: float = 3600, max_records: int = 1000) -> RecordStore:
        if request.param == "memory":
            return MemoryRecordStore(retention_s=retention_s, max_records=max_records)
        client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
        clients.append(client)
        return RedisRecordStore(client, prefix=prefix, retention_s=retention_s, max_records=max_records)

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def api(store_factory) -> AsyncIterator[tuple[TestClient, RecordStore]]:
    store = store_factory()
    app = web.Application()
    setup_routes(app, store)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client, store


async def test_list_newest_first_with_limit(api) -> None:
    client, store = api
    for i in (3, 1, 4, 0, 2):  # saved out of order; listed by start time
        await store.save(_record(i))
    resp = await client.get("/v1/calls", params={"limit": "3"})
    assert resp.status == 200
    body = await resp.json()
    assert [c["call_id"] for c in body["calls"]] == ["call-4", "call-3", "call-2"]
    resp = await client.get("/v1/calls")
    assert [c["call_id"] for c in (await resp.json())["calls"]] == [f"call-{i}" for i in (4, 3, 2, 1, 0)]


async def test_get_one_and_404(api) -> None:
    client, store = api
    await store.save(_record(1))
    resp = await client.get("/v1/calls/call-1")
    assert resp.status == 200
    got = CallRecord.model_validate(await resp.json())
    assert got == _record(1).model_copy(update={"caller": "+*****1001"})  # answered masked
    assert got.turns[1].intent == "billing" and got.turns[1].latency_ms == 310.0
    assert got.outcome == {"route": "billing"} and got.transport == "sip"
    resp = await client.get("/v1/calls/nope")
    assert resp.status == 404 and (await resp.json()) == {"error": "unknown call"}


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "", "1.5", str(MAX_LIMIT + 1)])
async def test_bad_limit_is_400(api, limit: str) -> None:
    client, _ = api
    resp = await client.get("/v1/calls", params={"limit": limit})
    assert resp.status == 400
    assert "limit" in (await resp.json())["error"]


async def test_max_limit_is_accepted(api) -> None:
    client, store = api
    await store.save(_record(1))
    resp = await client.get("/v1/calls", params={"limit": str(MAX_LIMIT)})
    assert resp.status == 200 and len((await resp.json())["calls"]) == 1


async def test_retention_trims_by_count(store_factory) -> None:
    store = store_factory(max_records=3)
    for i in range(6):
        await store.save(_record(i))
    assert [r.call_id for r in await store.list(10)] == ["call-5", "call-4", "call-3"]
    assert await store.get("call-0") is None and await store.get("call-2") is None
    assert await store.get("call-3") is not None


async def test_retention_trims_by_age(store_factory) -> None:
    store = store_factory(retention_s=600)
    old = datetime.now(UTC) - timedelta(seconds=599.7)
    now = datetime.now(UTC)
    await store.save(_record(1, started=old))
    await store.save(_record(2, started=now))
    assert {r.call_id for r in await store.list(10)} == {"call-1", "call-2"}
    await asyncio.sleep(0.5)  # let call-1 pass the retention age
    await store.save(_record(3, started=now + timedelta(seconds=1)))
    assert [r.call_id for r in await store.list(10)] == ["call-3", "call-2"]
    assert await store.get("call-1") is None
    # A record already past retention is not stored at all.
    await store.save(_record(9, started=datetime.now(UTC) - timedelta(hours=1)))
    assert await store.get("call-9") is None


async def test_redis_record_has_ttl_and_index(prefix: str, redis_client: aioredis.Redis) -> None:
    store = RedisRecordStore(redis_client, prefix=prefix, retention_s=3600)
    await store.save(_record(1))
    ttl_ms = await redis_client.pttl(f"{prefix}record:call-1")
    assert 0 < ttl_ms <= 3600_000 - 29 * 60_000
    assert await redis_client.zscore(f"{prefix}records", "call-1") == pytest.approx(_record(1).started_at.timestamp())


async def test_store_outage_is_503(prefix: str, dead_redis) -> None:
    app = web.Application()
    setup_routes(app, RedisRecordStore(dead_redis, prefix=prefix))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        assert (await client.get("/v1/calls")).status == 503
        assert (await client.get("/v1/calls/x")).status == 503


def test_record_model_validation() -> None:
    with pytest.raises(ValidationError):
        CallRecord.model_validate({**_record(1).model_dump(), "outcome": {"lunch": "x"}})
    with pytest.raises(ValidationError):
        CallRecord.model_validate({**_record(1).model_dump(), "transport": "pigeon"})
    with pytest.raises(ValidationError):
        CallRecord.model_validate({**_record(1).model_dump(), "started_at": datetime(2026, 1, 1)})
