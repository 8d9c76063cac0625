"""The one Redis the service uses (dialog state and records, hot-word lists): where it is and how to
connect, by URL or through Sentinel. `dialog` and `hotwords` only get a `connect(**options)` callable
from here, each adding the client options it needs (decoding, timeouts, retries)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel

Connect = Callable[..., aioredis.Redis]

# Sentinels answer one small query per (re)connection; a dead one should not hold a call up for long.
SENTINEL_TIMEOUT_S = 2.0


class RedisParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(
        None,
        description="redis:// or rediss:// URL with password and database; with sentinels its host is not used. "
        "none (and no sentinels): dialog state, call records and hot-word lists live in this process only",
    )
    sentinels: tuple[str, ...] = Field(
        (), description="Sentinel addresses (host:port) to ask for the current primary instead of the URL's host"
    )
    sentinel_master: str = Field("mymaster", min_length=1, description="the primary's name at the Sentinels")
    ssl_ca_file: Path | None = Field(
        None, description="CA certificate (PEM) of a rediss:// server with a private CA; none: the system's CAs"
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str | None) -> str | None:
        if url is not None:
            parse_url(url)  # raises ValueError on other schemes and bad query options
        return url

    @field_validator("sentinels")
    @classmethod
    def _host_port(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for address in sentinels:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"sentinel {address!r} is not host:port")
        return sentinels

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> RedisParams:
        if self.ssl_ca_file is not None and not (self.url or "").startswith("rediss://"):
            raise ValueError("redis.ssl_ca_file needs a rediss:// URL")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.url or self.sentinels)


class RedisConnector:
    """Builds the service's Redis clients; `aclose` releases what they share (the Sentinel clients).
    Each client owns its pool and is closed by whoever asked for it."""

    def __init__(self, params: RedisParams) -> None:
        self._sentinel: Sentinel | None = None
        tls: dict[str, Any] = {"ssl_ca_certs": str(params.ssl_ca_file)} if params.ssl_ca_file else {}
        if not params.sentinels:
            assert params.url is not None, "no Redis configured"
            self.connect: Connect = partial(aioredis.from_url, params.url, **tls)
            return
        # The URL's options (password, database, TLS) apply to the primary the Sentinels name.
        options: dict[str, Any] = dict(parse_url(params.url)) if params.url else {}
        options.pop("host", None)
        options.pop("port", None)
        options["ssl"] = options.pop("connection_class", None) is SSLConnection
        self._sentinel = Sentinel(
            [_address(s) for s in params.sentinels],
            sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S},
        )
        self.connect = partial(self._sentinel.master_for, params.sentinel_master, **options, **tls)

    async def aclose(self) -> None:
        if self._sentinel is not None:
            await self._sentinel.aclose()


def _address(sentinel: str) -> tuple[str, int]:
    host, _, port = sentinel.rpartition(":")
    return host.strip("[]"), int(port)


def open_redis(params: RedisParams) -> RedisConnector | None:
    """The connector, or None when no Redis is configured."""
    return RedisConnector(params) if params.configured else None


__all__ = ["Connect", "RedisConnector", "RedisParams", "open_redis"]
