"""Dialog stores that outlive Redis faults: each call's context lives in this process for the call's
lifetime and is written through to Redis, and so is its call record.

Writes go through one queue, coalesced per call and kind: a call's context write always writes the
call's latest state (context and all turns, `RedisContextStore.put`), so a Redis that restarted empty
gets the call back whole, and a record write is the latest record of the call. While Redis is away
the calls go on; the queue is retried with backoff and replayed when Redis returns. The queue is
bounded for contexts (the oldest context write is dropped, and counted, when it is full; the call's
next turn writes its state again); records are never dropped: at most one per call waits, and it is
readable here (`get`) until it is written.

`healthy` (and the gauge `voicenav_dialog_store_up`) says whether the last Redis operation worked,
for readiness reports: degraded means calls are served but not yet persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from dialog.context import DEFAULT_TTL_S, MemoryContextStore, RedisContextStore, Step, UnknownCall
from dialog.records import DEFAULT_MAX_RECORDS, DEFAULT_RETENTION_S, CallRecord, RedisRecordStore
from dialog.sealing import Sealer
from dialog.state import CallContext, Turn
from dialog.storage import Connect, StoreError, StoreUnavailable, guarded, redis_client

log = logging.getLogger(__name__)

STORE_UP = Gauge("voicenav_dialog_store_up", "1 while the dialog store's last Redis operation worked, else 0")
PENDING = Gauge("voicenav_dialog_store_pending_writes", "Dialog writes waiting for Redis, by kind", ["kind"])
DROPPED = Counter(
    "voicenav_dialog_store_writes_dropped_total",
    "Queued dialog writes given up: overflow (a newer state of the call follows) or error (rejected by Redis)",
    ["kind", "reason"],
)

Kind = Literal["context", "record"]
Write = Callable[[], Awaitable[None]]
DEFAULT_MAX_PENDING_CONTEXTS = 10_000


class WriteQueue:
    """Pending Redis writes, one per (kind, call id), written in order by one background task."""

    def __init__(
        self,
        client: aioredis.Redis,
        max_pending_contexts: int = DEFAULT_MAX_PENDING_CONTEXTS,
        retry_min_s: float = 0.1,
        retry_max_s: float = 2.0,
    ) -> None:
        if max_pending_contexts < 1 or not 0 < retry_min_s <= retry_max_s:
            raise ValueError("max_pending_contexts must be at least 1 and 0 < retry_min_s <= retry_max_s")
        self._r = client
        self._max_contexts = max_pending_contexts
        self._retry = (retry_min_s, retry_max_s)
        self._pending: OrderedDict[tuple[Kind, str], Write] = OrderedDict()
        self._contexts = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        STORE_UP.set(1)

    @property
    def healthy(self) -> bool:
        return self._healthy

    def pending(self, kind: Kind | None = None) -> int:
        return len(self._pending) if kind is None else sum(1 for k, _ in self._pending if k == kind)

    def submit(self, kind: Kind, call_id: str, write: Write) -> None:
        """Queue `write` for this call and kind, replacing one still waiting (it wrote an older state)."""
        key = (kind, call_id)
        if key in self._pending:
            self._pending.move_to_end(key)
        elif kind == "context":
            self._contexts += 1
        self._pending[key] = write
        if self._contexts > self._max_contexts:
            oldest = next(k for k in self._pending if k[0] == "context")
            del self._pending[oldest]
            self._contexts -= 1
            DROPPED.labels("context", "overflow").inc()
        self._gauges()
        self._drained.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="dialog-store-writer")

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write is in Redis; False if some still wait after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
            return True
        except TimeoutError:
            return False

    async def probe(self) -> bool:
        """Ping Redis (when nothing is queued; else the writer's last result stands) and return `healthy`."""
        if not self._pending:
            try:
                async with guarded("dialog", "ping"):
                    await self._r.ping()
                self._set_healthy(True)
            except StoreUnavailable:
                self._set_healthy(False)
        return self._healthy

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._r.aclose()

    async def _run(self) -> None:
        delay = self._retry[0]
        while True:
            if not self._pending:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key, write = next(iter(self._pending.items()))
            try:
                await write()
            except StoreUnavailable as exc:
                if self._healthy:
                    log.error("dialog store: Redis unavailable, %d writes queued: %s", len(self._pending), exc)
                self._set_healthy(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry[1])
                continue
            except StoreError as exc:
                # Redis answered and refused this write: retrying would block every call's writes behind it.
                log.error("dialog store: %s write for call %s rejected: %s", key[0], key[1], exc)
                DROPPED.labels(key[0], "error").inc()
            else:
                if not self._healthy:
                    log.warning("dialog store: Redis is back, replaying %d queued writes", len(self._pending))
                self._set_healthy(True)
                delay = self._retry[0]
            if self._pending.get(key) is write:  # not replaced by a newer state meanwhile
                del self._pending[key]
                if key[0] == "context":
                    self._contexts -= 1
            self._gauges()

    def _set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy
        STORE_UP.set(1 if healthy else 0)

    def _gauges(self) -> None:
        PENDING.labels("context").set(self._contexts)
        PENDING.labels("record").set(len(self._pending) - self._contexts)


class DurableContextStore:
    """`ContextStore` whose calls live here and are written through to Redis (see the module doc)."""

    def __init__(self, backend: RedisContextStore, queue: WriteQueue, ttl_s: float = DEFAULT_TTL_S) -> None:
        self._backend = backend
        self._queue = queue
        self._memory = MemoryContextStore(ttl_s)

    def _write_back(self, call_id: str) -> None:
        async def write() -> None:
            context = await self._memory.get(call_id)
            if context is not None:  # the latest state when the write runs, not when it was queued
                await self._backend.put(context, await self._memory.turns(call_id))

        self._queue.submit("context", call_id, write)

    async def create(self, context: CallContext) -> CallContext:
        stored = await self._memory.create(context)
        self._write_back(context.call_id)
        return stored

    async def get(self, call_id: str) -> CallContext | None:
        context = await self._memory.get(call_id)
        return context if context is not None else await self._backend.get(call_id)

    async def update(self, call_id: str, step: Step) -> tuple[CallContext, Turn | None]:
        try:
            result = await self._memory.update(call_id, step)
        except UnknownCall:
            # A call this process did not start (or has forgotten): Redis holds the only copy.
            return await self._backend.update(call_id, step)
        self._write_back(call_id)
        return result

    async def turns(self, call_id: str) -> list[Turn]:
        if await self._memory.get(call_id) is not None:
            return await self._memory.turns(call_id)
        return await self._backend.turns(call_id)

    async def ttl(self, call_id: str) -> float | None:
        ttl = await self._memory.ttl(call_id)
        return ttl if ttl is not None else await self._backend.ttl(call_id)

    async def delete(self, call_id: str) -> None:
        await self._memory.delete(call_id)
        self._queue.submit("context", call_id, lambda: self._backend.delete(call_id))


class DurableRecordStore:
    """`RecordStore` whose writes wait out Redis outages; a record not yet written is read from here."""

    def __init__(self, backend: RedisRecordStore, queue: WriteQueue) -> None:
        self._backend = backend
        self._queue = queue
        self._unwritten: dict[str, CallRecord] = {}

    async def save(self, record: CallRecord) -> None:
        self._unwritten[record.call_id] = record

        async def write() -> None:
            await self._backend.save(record)
            if self._unwritten.get(record.call_id) is record:
                del self._unwritten[record.call_id]

        self._queue.submit("record", record.call_id, write)

    async def get(self, call_id: str) -> CallRecord | None:
        record = self._unwritten.get(call_id)
        return record if record is not None else await self._backend.get(call_id)

    async def list(self, limit: int) -> list[CallRecord]:
        stored = await self._backend.list(limit)
        merged = {r.call_id: r for r in stored} | self._unwritten
        return sorted(merged.values(), key=lambda r: r.started_at, reverse=True)[:limit]


@dataclass
class DialogStores:
    """The dialog's stores over one Redis, sharing one write queue (and so one health state)."""

    contexts: DurableContextStore
    records: DurableRecordStore
    queue: WriteQueue

    @property
    def healthy(self) -> bool:
        """False while Redis is away: calls are served from memory, their writes wait in the queue."""
        return self.queue.healthy

    async def probe(self) -> bool:
        """`healthy`, after pinging Redis when no write has told lately (an idle instance)."""
        return await self.queue.probe()


def open_dialog_stores(
    redis: str | Connect,
    prefix: str = "voicenav:dialog:",
    sealer: Sealer | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    retention_s: float = DEFAULT_RETENTION_S,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_pending_contexts: int = DEFAULT_MAX_PENDING_CONTEXTS,
) -> DialogStores:
    client = redis_client(redis)
    queue = WriteQueue(client, max_pending_contexts)
    return DialogStores(
        DurableContextStore(RedisContextStore(client, prefix, ttl_s, sealer), queue, ttl_s),
        DurableRecordStore(RedisRecordStore(client, prefix, retention_s, max_records, sealer), queue),
        queue,
    )
