"""Who called stays masked: a sipp call from a full phone number leaves no trace of the whole number in
its call record, the `/v1/calls` answers, the dialog state in Redis or the service's log."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from callers import REDIS_URL, running_service, sipp_call, sipp_scenario

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

NUMBER = "5551234567"


async def test_a_callers_number_is_masked_in_records_answers_state_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_service() as server:
        scenario = sipp_scenario(tmp_path, NUMBER, '<exec play_dtmf="2,120"/>')
        rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=40)
        assert rc == 0, out
        record = await server.record_of(NUMBER)
        assert record["caller"] == "******4567" and record["outcome"] == {"route": "tech_support"}, record
        status, one = await server.get(f"/v1/calls/{record['call_id']}")
        assert status == 200 and one["caller"] == "******4567"
        _, listed = await server.get("/v1/calls?limit=200")
        assert NUMBER not in str(listed)
        stored = await _stored_values(f"{server.prefix}dialog:*")
        # the call's context, turns and record, in plaintext (no sealing key here), and the records index
        assert len(stored) >= 4 and any(b"******4567" in value for value in stored)
        assert not [value for value in stored if NUMBER.encode() in value]
    logged = [r.getMessage() for r in caplog.records]
    assert any("******4567" in line for line in logged), logged  # the call's end is logged, masked
    assert not [line for line in logged if NUMBER in line]


async def _stored_values(pattern: str) -> list[bytes]:
    """Every value (strings, hash fields, list items, set members) under the keys matching `pattern`."""
    client = aioredis.from_url(REDIS_URL)
    values: list[bytes] = []
    try:
        async for key in client.scan_iter(match=pattern):
            kind = (await client.type(key)).decode()
            if kind == "string":
                values.append(await client.get(key))
            elif kind == "hash":
                values += (await client.hgetall(key)).values()
            elif kind == "list":
                values += await client.lrange(key, 0, -1)
            elif kind == "zset":
                values += await client.zrange(key, 0, -1)
    finally:
        await client.aclose()
    return values
