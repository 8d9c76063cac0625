"""Calls go on through Redis faults: a Redis of the test's own is stopped for seconds during a call,
restarted empty between two turns of another (whose records are sealed with a configured key), and
fails over to its replica under Sentinel between two turns of a third; each call is routed right, and
its complete record is in (the current primary) Redis afterwards. (The shared Redis on 6379 is never
stopped.)"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from callers import Running, manifest, running_service, sipp_call, sipp_scenario, ulaw_file

from dialog.context import RedisContextStore
from dialog.records import CallRecord, RedisRecordStore
from dialog.redact import mask_caller
from dialog.sealing import Sealer, SealingParams, open_sealer
from tests.private_redis import PrivateRedis, PrivateSentinel

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,  # the test server's clean-up still talks to the shared one
    pytest.mark.timeout(150),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]


async def _record(server: Running, redis: PrivateRedis, caller: str, sealer: Sealer | None = None) -> CallRecord:
    """The caller's record as stored in the private Redis (not the service's copy of it)."""
    stores = server.service.dialog_stores
    assert stores is not None
    assert await stores.queue.flush(10.0), "queued writes did not reach Redis"
    client = aioredis.Redis(host="127.0.0.1", port=redis.port, decode_responses=True)
    try:
        records = RedisRecordStore(client, prefix=f"{server.prefix}dialog:", sealer=sealer)
        found = [r for r in await records.list(50) if r.caller == mask_caller(caller)]
        if sealer is not None:  # and at rest it is sealed with the configured key
            raw = await client.get(f"{server.prefix}dialog:record:{found[0].call_id}") if found else ""
            assert raw.startswith(f"aesgcm:{sealer.active}:"), raw[:40]
    finally:
        await client.aclose()
    assert len(found) == 1, f"no record of {caller} in Redis"
    return found[0]


# "4" (account), then the number and "1" (yes) after pauses; the IVR hangs up after routing.
ACCOUNT_TURNS = (
    '<exec play_dtmf="4,120"/></action></nop>\n'
    '  <pause milliseconds="6000"/>\n'
    '  <nop><action><exec play_dtmf="471922#,120"/></action></nop>\n'
    '  <pause milliseconds="5000"/>\n'
    '  <nop><action><exec play_dtmf="1,120"/>'
)


async def _in_account_node(server: Running, redis: PrivateRedis, caller: str, sealer: Sealer | None = None) -> None:
    """Wait until the call's first turn is in `redis`: the call stands in the account number node."""
    client = aioredis.Redis(host="127.0.0.1", port=redis.port)
    contexts = RedisContextStore(client, prefix=f"{server.prefix}dialog:", sealer=sealer)
    try:
        async with asyncio.timeout(15):
            while True:
                ids = [k.decode().split(":")[-1] async for k in client.scan_iter(match="*call:*[^s]")]
                found = [await contexts.get(i) for i in ids]
                if any(c is not None and c.node == "account_number" and c.caller == mask_caller(caller) for c in found):
                    return
                await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def test_redis_down_for_seconds_during_a_call(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        async with running_service(redis={"url": redis.url}) as server:
            expected = manifest()["dev031"]["intent"]
            caller = f"outage-{uuid.uuid4().hex[:8]}"
            audio = ulaw_file("dev031", tmp_path, lead_s=1.0)
            scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{audio},1,0"/>', timeout_ms=30000)
            failures = await server.metric("voicenav_call_failures_total", cause="store")
            await redis.stop()
            call = asyncio.create_task(sipp_call(scenario, server.sip_port, tmp_path, limit_s=45))
            await asyncio.sleep(3.0)  # the call is answered and the caller speaks while Redis is away
            assert await server.metric("voicenav_dialog_store_up") == 0
            assert await _readyz(server) == (200, "degraded")  # still takes calls, and says Redis is away
            await redis.start()
            rc, out = await call
            assert rc == 0, out
            record = await _record(server, redis, caller)
            assert record.outcome == {"route": expected}, record
            assert record.turns[0].event == "call_started"
            assert any(t.intent == expected for t in record.turns if t.event == "utterance")
            assert await server.metric("voicenav_call_failures_total", cause="store") == failures
            assert await server.metric("voicenav_dialog_store_up") == 1
            assert await _readyz(server) == (200, None)
    finally:
        await redis.stop()


async def _readyz(server: Running) -> tuple[int, str | None]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.http}/readyz") as resp:
        return resp.status, (await resp.json()).get("dialog_store")


async def test_redis_restarted_empty_between_two_turns(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        keys = tmp_path / "dialog-keys"
        keys.write_text(f"k1 {base64.b64encode(os.urandom(32)).decode()}\n")
        sealer = open_sealer(SealingParams(key_file=keys))
        async with running_service(redis={"url": redis.url}, dialog={"sealing": {"key_file": keys}}) as server:
            caller = f"restart-{uuid.uuid4().hex[:8]}"
            scenario = sipp_scenario(tmp_path, caller, ACCOUNT_TURNS, timeout_ms=30000)
            call = asyncio.create_task(sipp_call(scenario, server.sip_port, tmp_path, limit_s=60))
            await _in_account_node(server, redis, caller, sealer)
            await redis.restart()  # empty: the call's keys are gone
            rc, out = await call
            assert rc == 0, out
            record = await _record(server, redis, caller, sealer)
            assert record.outcome == {"route": "account"}, record
            keyed = "".join(t.dtmf or "" for t in record.turns if t.event == "dtmf")
            assert keyed == "4******#1"  # the account number's digits are masked in the record
    finally:
        await redis.stop()


@pytest.mark.timeout(90)
async def test_sentinel_failover_between_two_turns(tmp_path: Path) -> None:
    """The service finds Redis through a Sentinel; the primary dies between two turns of a call, the
    Sentinel promotes the replica, and the call's later turns and record land on the new primary."""
    for name in ("primary", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    primary = PrivateRedis(tmp_path / "primary")
    replica = PrivateRedis(tmp_path / "replica", replica_of=primary)
    sentinel = PrivateSentinel(tmp_path / "sentinel", primary, down_after_ms=1000)
    try:
        await primary.start()
        await replica.start()
        await sentinel.start()
        redis = {"sentinels": [sentinel.address], "sentinel_master": sentinel.master, "url": "redis:///0"}
        async with running_service(redis=redis) as server:
            caller = f"failover-{uuid.uuid4().hex[:8]}"
            scenario = sipp_scenario(tmp_path, caller, ACCOUNT_TURNS, timeout_ms=30000)
            call = asyncio.create_task(sipp_call(scenario, server.sip_port, tmp_path, limit_s=60))
            await _in_account_node(server, primary, caller)
            await _in_account_node(server, replica, caller)  # replicated before the primary goes
            await primary.stop()
            async with asyncio.timeout(20):  # down after 1 s, then the promotion
                while True:
                    if await sentinel.primary_port() == replica.port:
                        break
                    await asyncio.sleep(0.2)
            assert not call.done()  # the failover came mid-call: its last turns are still to come
            rc, out = await call
            assert rc == 0, out
            record = await _record(server, replica, caller)
            assert record.outcome == {"route": "account"}, record
            assert record.turns[0].event == "call_started"
            keyed = "".join(t.dtmf or "" for t in record.turns if t.event == "dtmf")
            assert keyed == "4******#1"  # every turn, those after the failover too
            client = aioredis.Redis(host="127.0.0.1", port=replica.port)
            try:
                contexts = RedisContextStore(client, prefix=f"{server.prefix}dialog:")
                turns = await contexts.turns(record.call_id)
            finally:
                await client.aclose()
            assert [t.dtmf for t in turns if t.event == "dtmf"] == [t.dtmf for t in record.turns if t.event == "dtmf"]
    finally:
        await sentinel.stop()
        await replica.stop()
        await primary.stop()
