"""The service without its model, on Redis under a fresh prefix: the security tests are about who
gets in, not what is recognized."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from ivr.app.config import AppConfig
from ivr.app.service import Service

REDIS_URL = "redis://127.0.0.1:6379/0"


class Unloaded(Service):
    """The service without its model: admission open (so offers get past it to the endpoint's own
    checks), never ready to recognize."""

    async def load(self) -> None:
        self.admission.open()

    def tokenizer(self) -> CharCodec:
        return CharCodec()


class CharCodec:
    """Stands in for the model's tokenizer, which the hot-word API needs before it answers."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    prefix = f"voicenav-sec-test:{uuid.uuid4().hex}:"
    svc = Unloaded(
        AppConfig(
            redis={"url": REDIS_URL},
            dialog={"key_prefix": f"{prefix}dialog:"},
            hotwords={"key_prefix": f"{prefix}hotwords"},
        )
    )
    yield svc
    client = aioredis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()
