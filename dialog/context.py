"""Per-call dialog context: a Redis hash per call plus its list of turns, both expiring with a TTL.

Updates are compare-and-set on a version field (a Lua script checks it and writes hash, turn and TTL
in one step), so two events racing for the same call never lose an update: the loser re-reads and
re-applies its step. `put` replaces a call's whole state (how a call's own copy is written back after
an outage, see `dialog.durable`). The context (hash field `data`) and each turn are sealed at rest
(`dialog.sealing`); only the version is stored in the clear. Without Redis, `MemoryContextStore`
keeps the same interface in process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter

from dialog.sealing import Sealer
from dialog.state import CallContext, Turn
from dialog.storage import Connect, StoreError, guarded, redis_client

log = logging.getLogger(__name__)

UPDATE_CONFLICTS = Counter(
    "voicenav_dialog_context_conflicts_total",
    "Context updates that lost a race with another event for the same call and were re-applied.",
)

Step = Callable[[CallContext], tuple[CallContext, Turn | None]]
"""Pure function from the stored context to the next one and the turn to append (may be re-run)."""

DEFAULT_TTL_S = 3600.0
_MAX_ATTEMPTS = 200  # compare-and-set retries before giving up on a hopelessly contended call


class UnknownCall(StoreError):
    """No context is stored for this call (never created, or expired)."""


class CallExists(StoreError):
    """A context is already stored for this call id."""


class ContextStore(Protocol):
    async def create(self, context: CallContext) -> CallContext: ...

    async def get(self, call_id: str) -> CallContext | None: ...

    async def update(self, call_id: str, step: Step) -> tuple[CallContext, Turn | None]: ...

    async def turns(self, call_id: str) -> list[Turn]: ...

    async def ttl(self, call_id: str) -> float | None: ...

    async def delete(self, call_id: str) -> None: ...


def _stamp(context: CallContext, turn: Turn | None, version: int) -> tuple[CallContext, Turn | None]:
    context = context.model_copy(update={"version": version})
    if turn is not None:
        turn = turn.model_copy(update={"seq": version})
    return context, turn


_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: hash, turns. ARGV: expected version, ttl ms, turn json ('' for none), field/value pairs...
_UPDATE = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


# KEYS: hash, turns. ARGV: ttl ms, number of turns, turn values..., field/value pairs...
_PUT = """
redis.call('DEL', KEYS[1], KEYS[2])
local n = tonumber(ARGV[2])
if n > 0 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 3, 2 + n)) end
redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if n > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) end
return 1
"""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisContextStore:
    """Contexts under `{prefix}call:{id}` (hash) and `{prefix}call:{id}:turns` (list)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "voicenav:dialog:",
        ttl_s: float = DEFAULT_TTL_S,
        sealer: Sealer | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._r = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_s * 1000)
        self._sealer = sealer or Sealer({})
        self._create = client.register_script(_CREATE)
        self._update = client.register_script(_UPDATE)
        self._put = client.register_script(_PUT)

    def _encode(self, context: CallContext) -> list[str]:
        key, _ = self._keys(context.call_id)
        return ["version", json.dumps(context.version), "data", self._sealer.seal(context.model_dump_json(), key)]

    def _decode(self, call_id: str, raw: dict[Any, Any]) -> CallContext:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "data" not in fields:
            raise ValueError(f"call {call_id!r}: stored context has no data field")
        key, _ = self._keys(call_id)
        return CallContext.model_validate_json(self._sealer.open(fields["data"], key))

    def _seal_turn(self, call_id: str, turn: Turn) -> str:
        return self._sealer.seal(turn.model_dump_json(), self._keys(call_id)[1])

    def _open_turn(self, call_id: str, stored: str | bytes) -> Turn:
        return Turn.model_validate_json(self._sealer.open(_text(stored), self._keys(call_id)[1]))

    def _keys(self, call_id: str) -> tuple[str, str]:
        base = f"{self._prefix}call:{call_id}"
        return base, f"{base}:turns"

    async def create(self, context: CallContext) -> CallContext:
        stored = context.model_copy(update={"version": 1})
        key, _ = self._keys(context.call_id)
        async with guarded("context", "create"):
            created = await self._create(keys=[key], args=[self._ttl_ms, *self._encode(stored)])
        if not created:
            raise CallExists(f"call {context.call_id!r} already has a context")
        return stored

    async def get(self, call_id: str) -> CallContext | None:
        key, _ = self._keys(call_id)
        async with guarded("context", "get"):
            raw = await self._r.hgetall(key)
            return self._decode(call_id, raw) if raw else None

    async def update(self, call_id: str, step: Step) -> tuple[CallContext, Turn | None]:
        """Apply `step` atomically; it is re-run on a fresh read whenever another writer got there first."""
        key, turns_key = self._keys(call_id)
        for attempt in range(_MAX_ATTEMPTS):
            current = await self.get(call_id)
            if current is None:
                raise UnknownCall(f"no context for call {call_id!r}")
            new, turn = _stamp(*step(current), current.version + 1)
            turn_value = self._seal_turn(call_id, turn) if turn is not None else ""
            async with guarded("context", "update"):
                done = await self._update(
                    keys=[key, turns_key],
                    args=[json.dumps(current.version), self._ttl_ms, turn_value, *self._encode(new)],
                )
            if done == 1:
                return new, turn
            if done == -1:
                raise UnknownCall(f"context for call {call_id!r} expired during the update")
            UPDATE_CONFLICTS.inc()
            # Lost the race: back off a little, growing, so a burst of writers spreads out.
            await asyncio.sleep(random.uniform(0, 0.0005 * min(attempt + 1, 20)))
        raise StoreError(f"call {call_id!r}: update still contended after {_MAX_ATTEMPTS} attempts")

    async def put(self, context: CallContext, turns: list[Turn]) -> None:
        """Replace the call's stored context and turns with these (created if Redis lost them)."""
        key, turns_key = self._keys(context.call_id)
        sealed = [self._seal_turn(context.call_id, t) for t in turns]
        async with guarded("context", "put"):
            await self._put(keys=[key, turns_key], args=[self._ttl_ms, len(sealed), *sealed, *self._encode(context)])

    async def turns(self, call_id: str) -> list[Turn]:
        _, turns_key = self._keys(call_id)
        async with guarded("context", "turns"):
            return [self._open_turn(call_id, t) for t in await self._r.lrange(turns_key, 0, -1)]

    async def ttl(self, call_id: str) -> float | None:
        """Seconds until the call's context expires; None when there is no context."""
        key, _ = self._keys(call_id)
        async with guarded("context", "ttl"):
            ms = await self._r.pttl(key)
        return ms / 1000.0 if ms >= 0 else None

    async def delete(self, call_id: str) -> None:
        async with guarded("context", "delete"):
            await self._r.delete(*self._keys(call_id))


class MemoryContextStore:
    """In-process contexts with the Redis store's semantics; not shared between processes, not persisted."""

    _SWEEP_EVERY = 256  # writes between sweeps of expired calls

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._ttl_s = ttl_s
        # Stored as JSON so callers never share mutable objects with the store, as with Redis.
        self._calls: dict[str, tuple[str, list[str], float]] = {}
        self._writes = 0

    def _live(self, call_id: str) -> tuple[str, list[str], float] | None:
        entry = self._calls.get(call_id)
        if entry is not None and entry[2] <= time.monotonic():
            del self._calls[call_id]
            return None
        return entry

    def _put(self, call_id: str, context: CallContext, turns: list[str]) -> None:
        self._calls[call_id] = (context.model_dump_json(), turns, time.monotonic() + self._ttl_s)
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            now = time.monotonic()
            for cid in [c for c, (_, _, exp) in self._calls.items() if exp <= now]:
                del self._calls[cid]

    async def create(self, context: CallContext) -> CallContext:
        if self._live(context.call_id) is not None:
            raise CallExists(f"call {context.call_id!r} already has a context")
        stored = context.model_copy(update={"version": 1})
        self._put(context.call_id, stored, [])
        return stored

    async def get(self, call_id: str) -> CallContext | None:
        entry = self._live(call_id)
        return CallContext.model_validate_json(entry[0]) if entry else None

    async def update(self, call_id: str, step: Step) -> tuple[CallContext, Turn | None]:
        # No await between read and write: atomic with respect to other tasks on this loop.
        entry = self._live(call_id)
        if entry is None:
            raise UnknownCall(f"no context for call {call_id!r}")
        current = CallContext.model_validate_json(entry[0])
        new, turn = _stamp(*step(current), current.version + 1)
        turns = entry[1] if turn is None else [*entry[1], turn.model_dump_json()]
        self._put(call_id, new, turns)
        return new, turn

    async def turns(self, call_id: str) -> list[Turn]:
        entry = self._live(call_id)
        return [Turn.model_validate_json(t) for t in entry[1]] if entry else []

    async def ttl(self, call_id: str) -> float | None:
        entry = self._live(call_id)
        return max(0.0, entry[2] - time.monotonic()) if entry else None

    async def delete(self, call_id: str) -> None:
        self._calls.pop(call_id, None)


def open_context_store(
    redis: str | Connect | None,
    prefix: str = "voicenav:dialog:",
    ttl_s: float = DEFAULT_TTL_S,
    sealer: Sealer | None = None,
) -> ContextStore:
    """The Redis store (a URL or a `Connect`), or the embedded in-process store when there is none."""
    if redis:
        return RedisContextStore(redis_client(redis), prefix=prefix, ttl_s=ttl_s, sealer=sealer)
    log.warning(
        "no Redis URL configured: call context is kept in this process only; "
        "it is not shared with other instances and is lost on restart"
    )
    return MemoryContextStore(ttl_s=ttl_s)
