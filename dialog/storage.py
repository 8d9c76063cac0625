"""What the dialog stores share: typed errors, their counter, and the Redis client they are built on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

STORE_ERRORS = Counter(
    "voicenav_dialog_store_errors_total",
    "Dialog store operations that failed, by store, operation and kind (unavailable, corrupt).",
    ["store", "operation", "kind"],
)


class StoreError(RuntimeError):
    """A dialog store operation failed; the call can carry on without it or end cleanly."""


class StoreUnavailable(StoreError):
    """Redis could not be reached (or timed out); nothing was written by this operation."""


class StoreDataError(StoreError):
    """Stored data could not be read back as the expected model."""


@asynccontextmanager
async def guarded(store: str, operation: str) -> AsyncIterator[None]:
    """Turn Redis outages and unreadable data into typed, counted errors."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        STORE_ERRORS.labels(store, operation, "unavailable").inc()
        raise StoreUnavailable(f"{store} {operation}: Redis unavailable: {exc}") from exc
    except ValueError as exc:  # json and pydantic validation errors
        STORE_ERRORS.labels(store, operation, "corrupt").inc()
        raise StoreDataError(f"{store} {operation}: unreadable stored data: {exc}") from exc


# Builds a client from client options (a URL bound in, a Sentinel's `master_for`, ...).
Connect = Callable[..., aioredis.Redis]


def redis_client(redis: str | Connect, timeout_s: float = 2.0) -> aioredis.Redis:
    """A client (of a URL, or from `connect(**options)`) that fails fast during an outage instead of
    stalling every call on the host."""
    connect = partial(aioredis.from_url, redis) if isinstance(redis, str) else redis
    return connect(
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    )
