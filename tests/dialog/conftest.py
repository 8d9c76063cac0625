from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


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
