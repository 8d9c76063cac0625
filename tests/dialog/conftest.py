from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.private_redis import PrivateRedis


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A unique key namespace for one test; every key under it is deleted afterwards."""
    p = f"test:dialog:{uuid.uuid4().hex}:"
    yield p
    cleaner = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    try:
        keys = [k async for k in cleaner.scan_iter(match=f"{p}*", count=1000)]
        if keys:
            await cleaner.delete(*keys)
    finally:
        await cleaner.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    """A client for a port nothing listens on, failing at once: a Redis outage."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


@pytest.fixture
async def private_redis(tmp_path) -> AsyncIterator[PrivateRedis]:
    """A Redis of this test's own that it may stop and restart."""
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    await server.stop()
