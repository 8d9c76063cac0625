"""The service's one `redis` section: clients by URL (TLS with a private CA) or through Sentinel, for
the dialog stores and the hot-word store alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from dialog.records import CallRecord
from hotwords.schema import Entry, HotwordListIn
from ivr.app.config import AppConfig
from ivr.app.redis import RedisConnector, RedisParams, open_redis
from ivr.app.service import Service
from tests.private_redis import PrivateRedis, PrivateSentinel


def _ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # read only when a connection is made
    return ca


async def test_rediss_with_a_private_ca_builds_a_tls_pool(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    connector = RedisConnector(RedisParams(url="rediss://:s3cret@redis.internal:6380/2", ssl_ca_file=ca))
    client = connector.connect(decode_responses=True)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["host"], kwargs["port"], kwargs["db"]) == (
        str(ca),
        "redis.internal",
        6380,
        2,
    )
    assert kwargs["password"] == "s3cret" and kwargs["decode_responses"] is True
    await client.aclose()
    await connector.aclose()


async def test_sentinel_primary_gets_the_urls_password_database_and_tls(tmp_path: Path) -> None:
    ca = _ca(tmp_path)
    params = RedisParams(
        url="rediss://:s3cret@ignored.internal:6380/3",
        sentinels=("sentinel-0.redis:26379", "[fd00::1]:26379"),
        sentinel_master="primary",
        ssl_ca_file=ca,
    )
    connector = RedisConnector(params)
    client = connector.connect(socket_timeout=1.5)
    pool = client.connection_pool
    assert pool.service_name == "primary" and pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["ssl_ca_certs"], kwargs["password"], kwargs["db"]) == (str(ca), "s3cret", 3)
    assert kwargs["socket_timeout"] == 1.5 and "host" not in kwargs
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("sentinel-0.redis", 26379), ("fd00::1", 26379)]
    await client.aclose()
    await connector.aclose()


def test_bad_redis_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="rediss://"):
        RedisParams(url="redis://127.0.0.1:6379/0", ssl_ca_file=_ca(tmp_path))
    with pytest.raises(ValidationError, match="host:port"):
        RedisParams(sentinels=("sentinel-0.redis",))
    with pytest.raises(ValidationError):
        RedisParams(url="http://127.0.0.1:6379/0")
    assert open_redis(RedisParams()) is None


def test_redis_section_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICENAV_REDIS__URL", "redis://:pw@127.0.0.1:6379/4")
    monkeypatch.setenv("VOICENAV_REDIS__SENTINELS", '["10.0.0.1:26379", "10.0.0.2:26379"]')
    monkeypatch.setenv("VOICENAV_REDIS__SENTINEL_MASTER", "voicenav")
    redis = AppConfig().redis
    assert redis.sentinels == ("10.0.0.1:26379", "10.0.0.2:26379") and redis.sentinel_master == "voicenav"


async def test_the_service_finds_its_redis_through_sentinel(tmp_path: Path) -> None:
    """Call records and hot-word lists (with their change events) go to the primary a real Sentinel
    names; the service's config holds no address of that primary."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "sentinel").mkdir()
    primary = PrivateRedis(tmp_path / "redis")
    sentinel = PrivateSentinel(tmp_path / "sentinel", primary)
    await primary.start()
    service: Service | None = None
    direct = aioredis.Redis(host="127.0.0.1", port=primary.port, decode_responses=True)
    try:
        await sentinel.start()
        service = Service(
            AppConfig(redis={"sentinels": [sentinel.address], "sentinel_master": sentinel.master, "url": "redis:///0"})
        )
        assert service.dialog_stores is not None
        started = datetime.now(UTC)
        record = CallRecord(call_id="sentinel-1", caller="+15550100", transport="sip", started_at=started)
        await service.records.save(record)
        assert await service.dialog_stores.queue.flush(5.0)
        assert (await service.records.get("sentinel-1")) == record
        assert await direct.exists("voicenav:dialog:record:sentinel-1")

        events = await service.hotword_store.subscribe()
        try:
            content = HotwordListIn(entries=[Entry(phrase="Zentrix Unlimited")])
            await service.hotword_store.put("products", content, by="ops")
            event = await events.get(5.0)
            assert event is not None and event.name == "products"
        finally:
            await events.close()
        stored = await service.hotword_store.get("products")
        assert stored is not None and [e.phrase for e in stored.entries] == ["Zentrix Unlimited"]
        assert await direct.hget("voicenav:hotwords:current", "products") == "1"
    finally:
        if service is not None:
            await asyncio.wait_for(service.stop(), 30)
        await direct.aclose()
        await sentinel.stop()
        await primary.stop()
