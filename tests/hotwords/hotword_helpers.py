"""Helpers of the hot-word tests (imported by name; conftest modules are not importable reliably)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from hotwords.registry import HotwordRegistry
from hotwords.service import HotwordService
from hotwords.store import RedisHotwordStore

REDIS_URL = "redis://127.0.0.1:6379/0"


def shared_data() -> Path:
    """The speech data directory beside the checkout (or $VOICENAV_SHARED/data)."""
    root = Path(__file__).resolve().parents[2]
    for cand in (os.environ.get("VOICENAV_SHARED"), root.parent / "shared", root / "shared"):
        if cand and (Path(cand) / "data").is_dir():
            return Path(cand) / "data"
    pytest.skip("speech data (../shared) is not beside this checkout")


@dataclass
class Instance:
    """One replica: its own Redis client, store, admin API and registry."""

    client: TestClient
    store: RedisHotwordStore
    service: HotwordService
    registry: HotwordRegistry

    async def put(
        self,
        name: str,
        body: object,
        token: str = "tok-alice",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> ClientResponse:
        sent = {**auth(token), **(headers or {})}
        return await self.client.put(f"/v1/hotwords/{name}", json=body, headers=sent, **kw)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
