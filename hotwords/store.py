"""Versioned storage of hot-word lists: Redis (shared by every replica) or process memory (single process).

Every write creates a new version; history is never rewritten (a rollback writes a new version equal to an
old one, a delete drops only the current pointer). Each change is written atomically together with its
audit record and announced to the replicas.

Redis layout under `<prefix>`:
    <prefix>:current            HASH  name -> current version
    <prefix>:list:<name>:seq    STRING last version number handed out (also the WATCH key of the list)
    <prefix>:list:<name>:v      HASH  version -> HotwordList JSON (every version)
    <prefix>:audit:<name>       STREAM audit records, capped
    <prefix>:events             pub/sub channel of ChangeEvent JSON
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from hotwords.schema import AuditRecord, ChangeEvent, HotwordList, HotwordListIn

log = logging.getLogger(__name__)

Action = Literal["put", "rollback", "delete"]
# Builds a client from client options (a URL bound in, a Sentinel's `master_for`, ...).
Connect = Callable[..., aioredis.Redis]

_MAX_WATCH_RETRIES = 20


class NotFound(LookupError):
    """No such list, or no such version of it."""


class VersionConflict(RuntimeError):
    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"list is at version {current}, not {expected}")
        self.expected = expected
        self.current = current


class StoreBusy(RuntimeError):
    """Concurrent writers kept winning the optimistic transaction."""


class Subscription(ABC):
    @abstractmethod
    async def get(self, wait_seconds: float) -> ChangeEvent | None:
        """The next announcement, or None after `wait_seconds` without one."""

    @abstractmethod
    async def close(self) -> None: ...


class HotwordStore(ABC):
    """The one interface both storage backends implement."""

    @abstractmethod
    async def get(self, name: str, version: int | None = None) -> HotwordList | None:
        """The current version (or the given one, also of a deleted list); None if there is none."""

    @abstractmethod
    async def current_versions(self) -> dict[str, int]: ...

    @abstractmethod
    async def list_current(self) -> list[HotwordList]: ...

    @abstractmethod
    async def versions(self, name: str) -> list[int]: ...

    @abstractmethod
    async def audit(self, name: str, limit: int = 100) -> list[AuditRecord]:
        """The newest `limit` audit records of a list, newest first."""

    @abstractmethod
    async def _commit(
        self,
        name: str,
        content: HotwordListIn | None,
        by: str,
        action: Action,
        expected_version: int | None,
    ) -> tuple[int | None, HotwordList | None]:
        """Write one change atomically; returns the previous version and the new record."""

    @abstractmethod
    async def subscribe(self) -> Subscription: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def put(self, name: str, content: HotwordListIn, by: str, expected_version: int | None = None) -> HotwordList:
        """Store `content` as the next version. `expected_version` (0: must not exist) guards against
        concurrent edits."""
        _, record = await self._commit(name, content, by, "put", expected_version)
        assert record is not None
        return record

    async def rollback(self, name: str, version: int, by: str, expected_version: int | None = None) -> HotwordList:
        old = await self.get(name, version)
        if old is None:
            raise NotFound(f"list {name!r} has no version {version}")
        content = HotwordListIn(scope=old.scope, language=old.language, entries=old.entries)
        _, record = await self._commit(name, content, by, "rollback", expected_version)
        assert record is not None
        return record

    async def delete(self, name: str, by: str, expected_version: int | None = None) -> int:
        """Remove the list (its versions and audit stay); returns the version it had."""
        previous, _ = await self._commit(name, None, by, "delete", expected_version)
        assert previous is not None
        return previous


def _check(name: str, action: Action, current: int | None, expected: int | None) -> None:
    if action == "delete" and current is None:
        raise NotFound(f"no list {name!r}")
    if expected is not None and expected != (current or 0):
        raise VersionConflict(expected, current or 0)


def _record(name: str, content: HotwordListIn, version: int, by: str) -> HotwordList:
    return HotwordList(
        name=name,
        version=version,
        updated_at=datetime.now(UTC),
        updated_by=by,
        scope=content.scope,
        language=content.language,
        entries=content.entries,
    )


def _change(
    name: str, action: Action, by: str, current: int | None, record: HotwordList | None
) -> tuple[AuditRecord, ChangeEvent]:
    """The audit record and the announcement of one change; no `record` means the list was deleted."""
    version = None if record is None else record.version
    audit = AuditRecord(at=datetime.now(UTC), by=by, action=action, name=name, old_version=current, new_version=version)
    return audit, ChangeEvent(name=name, version=version)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSubscription(Subscription):
    def __init__(self, pubsub: aioredis.client.PubSub) -> None:
        self._pubsub = pubsub

    async def get(self, wait_seconds: float) -> ChangeEvent | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            # None also stands for a consumed (un)subscribe confirmation, not only for a timeout.
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(0.0, deadline - loop.time())
            )
            if message is not None:
                return ChangeEvent.model_validate_json(message["data"])
            if loop.time() >= deadline:
                return None

    async def close(self) -> None:
        await self._pubsub.aclose()


class RedisHotwordStore(HotwordStore):
    def __init__(self, client: aioredis.Redis, prefix: str, audit_cap: int = 1000) -> None:
        self._redis = client
        self._prefix = prefix
        self._audit_cap = audit_cap
        self.channel = f"{prefix}:events"

    @classmethod
    def connect(cls, redis: str | Connect, prefix: str, audit_cap: int = 1000) -> RedisHotwordStore:
        """A store on a client of `redis`: a URL, or `connect(**options)` building one."""
        connect = partial(aioredis.Redis.from_url, redis) if isinstance(redis, str) else redis
        return cls(connect(socket_connect_timeout=2.0, socket_timeout=5.0), prefix, audit_cap)

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    async def get(self, name: str, version: int | None = None) -> HotwordList | None:
        if version is None:
            current = await self._redis.hget(self._key("current"), name)
            if current is None:
                return None
            version = int(current)
        raw = await self._redis.hget(self._key("list", name, "v"), str(version))
        return None if raw is None else HotwordList.model_validate_json(raw)

    async def current_versions(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self._key("current"))
        return {_text(name): int(version) for name, version in raw.items()}

    async def list_current(self) -> list[HotwordList]:
        current = await self.current_versions()
        async with self._redis.pipeline(transaction=False) as pipe:
            for name, version in sorted(current.items()):
                pipe.hget(self._key("list", name, "v"), str(version))
            rows = await pipe.execute()
        return [HotwordList.model_validate_json(row) for row in rows if row is not None]

    async def versions(self, name: str) -> list[int]:
        return sorted(int(v) for v in await self._redis.hkeys(self._key("list", name, "v")))

    async def audit(self, name: str, limit: int = 100) -> list[AuditRecord]:
        rows = await self._redis.xrevrange(self._key("audit", name), count=limit)
        return [
            AuditRecord.model_validate_json(value)
            for _, fields in rows
            for key, value in fields.items()
            if _text(key) == "record"
        ]

    async def _commit(
        self,
        name: str,
        content: HotwordListIn | None,
        by: str,
        action: Action,
        expected_version: int | None,
    ) -> tuple[int | None, HotwordList | None]:
        seq_key = self._key("list", name, "seq")
        for _ in range(_MAX_WATCH_RETRIES):
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    # Every change of the list bumps its sequence, so watching it is enough to make the
                    # read of the current version and the write one atomic step.
                    await pipe.watch(seq_key)
                    raw_current = await pipe.hget(self._key("current"), name)
                    current = None if raw_current is None else int(raw_current)
                    _check(name, action, current, expected_version)
                    seq = int(await pipe.get(seq_key) or 0) + 1
                    record = None if content is None else _record(name, content, seq, by)
                    audit, event = _change(name, action, by, current, record)
                    pipe.multi()
                    pipe.set(seq_key, seq)
                    if record is None:
                        pipe.hdel(self._key("current"), name)
                    else:
                        pipe.hset(self._key("list", name, "v"), str(seq), record.model_dump_json())
                        pipe.hset(self._key("current"), name, str(seq))
                    pipe.xadd(
                        self._key("audit", name),
                        {"record": audit.model_dump_json()},
                        maxlen=self._audit_cap,
                        approximate=False,
                    )
                    pipe.publish(self.channel, event.model_dump_json())
                    await pipe.execute()
                    return current, record
                except WatchError:
                    continue
        raise StoreBusy(f"list {name!r} kept changing during {_MAX_WATCH_RETRIES} attempts to write it")

    async def subscribe(self) -> Subscription:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            await pubsub.aclose()
            raise
        return RedisSubscription(pubsub)

    async def close(self) -> None:
        await self._redis.aclose()


class MemorySubscription(Subscription):
    def __init__(self, store: MemoryHotwordStore) -> None:
        self._store = store
        self.queue: asyncio.Queue[ChangeEvent] = asyncio.Queue(maxsize=1000)

    async def get(self, wait_seconds: float) -> ChangeEvent | None:
        try:
            return await asyncio.wait_for(self.queue.get(), wait_seconds)
        except TimeoutError:
            return None

    async def close(self) -> None:
        self._store.subscribers.discard(self)


class MemoryHotwordStore(HotwordStore):
    """Same API as the Redis store, kept in this process: nothing is shared with other replicas and
    everything is lost on restart."""

    def __init__(self, audit_cap: int = 1000) -> None:
        log.warning(
            "hot-word lists are kept in process memory: not shared between replicas, lost on restart "
            "(configure a Redis URL to share and persist them)"
        )
        self._audit_cap = audit_cap
        self._current: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._versions: dict[str, dict[int, HotwordList]] = {}
        self._audit: dict[str, list[AuditRecord]] = {}
        self.subscribers: set[MemorySubscription] = set()

    async def get(self, name: str, version: int | None = None) -> HotwordList | None:
        version = self._current.get(name) if version is None else version
        return None if version is None else self._versions.get(name, {}).get(version)

    async def current_versions(self) -> dict[str, int]:
        return dict(self._current)

    async def list_current(self) -> list[HotwordList]:
        return [self._versions[name][version] for name, version in sorted(self._current.items())]

    async def versions(self, name: str) -> list[int]:
        return sorted(self._versions.get(name, {}))

    async def audit(self, name: str, limit: int = 100) -> list[AuditRecord]:
        return list(reversed(self._audit.get(name, [])))[:limit]

    async def _commit(
        self,
        name: str,
        content: HotwordListIn | None,
        by: str,
        action: Action,
        expected_version: int | None,
    ) -> tuple[int | None, HotwordList | None]:
        current = self._current.get(name)
        _check(name, action, current, expected_version)
        seq = self._seq.get(name, 0) + 1
        self._seq[name] = seq
        record = None if content is None else _record(name, content, seq, by)
        if record is None:
            del self._current[name]
        else:
            self._versions.setdefault(name, {})[seq] = record
            self._current[name] = seq
        audit, event = _change(name, action, by, current, record)
        trail = self._audit.setdefault(name, [])
        trail.append(audit)
        del trail[: -self._audit_cap]
        for subscriber in list(self.subscribers):
            if subscriber.queue.full():
                # A stalled subscriber loses announcements; its periodic resync catches up.
                log.warning("hot-word announcement queue full; dropping %s", event)
                continue
            subscriber.queue.put_nowait(event)
        return current, record

    async def subscribe(self) -> Subscription:
        subscription = MemorySubscription(self)
        self.subscribers.add(subscription)
        return subscription

    async def close(self) -> None:
        self.subscribers.clear()


def open_store(redis: str | Connect | None, prefix: str, audit_cap: int = 1000) -> HotwordStore:
    """Lists in Redis (a URL or a `Connect`), or in this process only without one."""
    if redis:
        return RedisHotwordStore.connect(redis, prefix, audit_cap)
    return MemoryHotwordStore(audit_cap)
