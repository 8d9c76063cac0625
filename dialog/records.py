"""Call records: who called, how, every turn and where the call ended; kept for a retention period.

In Redis each record is a JSON string (sealed, see `dialog.sealing`) with a TTL, indexed by start time
in a sorted set that is trimmed (by age and by count) on every write. `MemoryRecordStore` is the
embedded equivalent. The HTTP view is `GET /v1/calls` (newest first) and `GET /v1/calls/{id}`; every
read is audited (log line and counter) with the reader's identity, which an authentication middleware
puts in `request[READER]` ("anonymous" without one).

Who called (`caller`) is kept, answered and logged masked (`dialog.redact.mask_caller`) unless
`RecordsParams.caller_ids` is "raw".
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Literal, Protocol

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dialog.redact import mask_caller
from dialog.sealing import Sealer
from dialog.state import Turn
from dialog.storage import Connect, StoreError, guarded, redis_client

log = logging.getLogger(__name__)
audit = logging.getLogger("voicenav.audit")

RECORD_READS = Counter("voicenav_call_record_reads_total", "Call record reads over HTTP, by view (one, list)", ["view"])
# What an authentication middleware sets to who is asking (a user name, a token's subject).
READER: web.RequestKey[str] = web.RequestKey("voicenav_reader", str)

DEFAULT_RETENTION_S = 7 * 24 * 3600.0
DEFAULT_MAX_RECORDS = 100_000
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
_OUTCOME_KINDS = frozenset({"route", "hangup", "transfer"})


class RecordsParams(BaseModel):
    caller_ids: Literal["masked", "raw"] = Field(
        "masked",
        description="how call records, /v1/calls answers and call logs show the caller's number or address: "
        "masked keeps the last 4 digits of a number (2 of an IP address), raw shows it whole",
    )

    def present_caller(self, caller: str) -> str:
        """`caller` as this deployment keeps and shows it."""
        return caller if self.caller_ids == "raw" else mask_caller(caller)


class CallRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1, max_length=200)
    caller: str
    transport: Literal["sip", "webrtc"]
    flow_id: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    turns: list[Turn] = Field(default_factory=list)
    # {"route": "<queue>"} when routed, {"transfer": "<uri>"} when transferred, else {"hangup": "<reason>"}.
    outcome: dict[str, str] | None = None

    @field_validator("outcome")
    @classmethod
    def _one_outcome(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (len(value) != 1 or not set(value) <= _OUTCOME_KINDS):
            raise ValueError(f"outcome must be one of {sorted(_OUTCOME_KINDS)} with its value")
        return value

    @field_validator("started_at", "ended_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # Naive datetimes would make the start-time index depend on the host's time zone.
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps need a time zone")
        return value


class CallList(BaseModel):
    calls: list[CallRecord]


class RecordStore(Protocol):
    async def save(self, record: CallRecord) -> None: ...

    async def get(self, call_id: str) -> CallRecord | None: ...

    async def list(self, limit: int) -> list[CallRecord]: ...


# KEYS: record, index. ARGV: json, ttl ms, score, call id, oldest score kept, max records, key prefix.
_SAVE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
local drop = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[5])
local excess = redis.call('ZCARD', KEYS[2]) - #drop - tonumber(ARGV[6])
if excess > 0 then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf', 'LIMIT', 0, excess)
  for _, id in ipairs(oldest) do table.insert(drop, id) end
end
for _, id in ipairs(drop) do
  redis.call('DEL', ARGV[7] .. id)
  redis.call('ZREM', KEYS[2], id)
end
return #drop
"""


def _bounds(retention_s: float, max_records: int) -> None:
    if retention_s <= 0 or max_records < 1:
        raise ValueError("retention_s must be positive and max_records at least 1")


class RedisRecordStore:
    """Records under `{prefix}record:{id}`, index `{prefix}records` (score: start time, unix seconds)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "voicenav:dialog:",
        retention_s: float = DEFAULT_RETENTION_S,
        max_records: int = DEFAULT_MAX_RECORDS,
        sealer: Sealer | None = None,
    ) -> None:
        _bounds(retention_s, max_records)
        self._r = client
        self._prefix = prefix
        self._retention_s = retention_s
        self._max = max_records
        self._sealer = sealer or Sealer({})
        self._save = client.register_script(_SAVE)

    def _open(self, call_id: str, stored: str | bytes) -> CallRecord:
        text = stored.decode() if isinstance(stored, bytes) else stored
        return CallRecord.model_validate_json(self._sealer.open(text, self._key(call_id)))

    def _key(self, call_id: str) -> str:
        return f"{self._prefix}record:{call_id}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}records"

    async def save(self, record: CallRecord) -> None:
        """Store (or replace) a record and trim what is past retention or beyond `max_records`."""
        started = record.started_at.timestamp()
        remaining_ms = int((started + self._retention_s - time.time()) * 1000)
        if remaining_ms <= 0:
            log.info("call record %s is already past retention; not stored", record.call_id)
            return
        async with guarded("records", "save"):
            await self._save(
                keys=[self._key(record.call_id), self._index],
                args=[
                    self._sealer.seal(record.model_dump_json(), self._key(record.call_id)),
                    remaining_ms,
                    repr(started),
                    record.call_id,
                    repr(time.time() - self._retention_s),
                    self._max,
                    f"{self._prefix}record:",
                ],
            )

    async def get(self, call_id: str) -> CallRecord | None:
        async with guarded("records", "get"):
            raw = await self._r.get(self._key(call_id))
            return self._open(call_id, raw) if raw is not None else None

    async def list(self, limit: int) -> list[CallRecord]:
        """Newest first (by start time)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with guarded("records", "list"):
            ids = await self._r.zrevrange(self._index, 0, limit - 1)
            if not ids:
                return []
            call_ids = [i if isinstance(i, str) else i.decode() for i in ids]
            raws = await self._r.mget([self._key(i) for i in call_ids])
            # A record whose key expired before the index was next trimmed is simply gone.
            return [self._open(i, r) for i, r in zip(call_ids, raws, strict=True) if r is not None]


class MemoryRecordStore:
    """In-process records with the same retention rules; lost on restart."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S, max_records: int = DEFAULT_MAX_RECORDS):
        _bounds(retention_s, max_records)
        self._retention_s = retention_s
        self._max = max_records
        self._records: dict[str, str] = {}  # JSON, as in Redis: no shared mutable objects
        self._started: dict[str, float] = {}

    def _trim(self) -> None:
        oldest_kept = time.time() - self._retention_s
        for cid in [c for c, t in self._started.items() if t < oldest_kept]:
            self._drop(cid)
        excess = len(self._started) - self._max
        if excess > 0:
            for cid in sorted(self._started, key=lambda c: (self._started[c], c))[:excess]:
                self._drop(cid)

    def _drop(self, call_id: str) -> None:
        self._records.pop(call_id, None)
        self._started.pop(call_id, None)

    async def save(self, record: CallRecord) -> None:
        self._records[record.call_id] = record.model_dump_json()
        self._started[record.call_id] = record.started_at.timestamp()
        self._trim()

    async def get(self, call_id: str) -> CallRecord | None:
        self._trim()
        raw = self._records.get(call_id)
        return CallRecord.model_validate_json(raw) if raw is not None else None

    async def list(self, limit: int) -> list[CallRecord]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._trim()
        newest = sorted(self._started, key=lambda c: (self._started[c], c), reverse=True)[:limit]
        return [CallRecord.model_validate_json(self._records[c]) for c in newest]


def open_record_store(
    redis: str | Connect | None,
    prefix: str = "voicenav:dialog:",
    retention_s: float = DEFAULT_RETENTION_S,
    max_records: int = DEFAULT_MAX_RECORDS,
    sealer: Sealer | None = None,
) -> RecordStore:
    if redis:
        return RedisRecordStore(redis_client(redis), prefix, retention_s, max_records, sealer)
    log.warning("no Redis URL configured: call records are kept in this process only and lost on restart")
    return MemoryRecordStore(retention_s, max_records)


# -- HTTP ------------------------------------------------------------------------------------------

_STORE_KEY: web.AppKey[RecordStore] = web.AppKey("dialog_records", RecordStore)
_PARAMS_KEY: web.AppKey[RecordsParams] = web.AppKey("dialog_records_params", RecordsParams)


def _error(status: type[web.HTTPException], message: str) -> web.HTTPException:
    return status(text=json.dumps({"error": message}), content_type="application/json")


def _json(model: BaseModel) -> web.Response:
    return web.Response(text=model.model_dump_json(), content_type="application/json")


def _shown(request: web.Request, record: CallRecord) -> CallRecord:
    # Records are stored as presented already; this covers those written before masking was the default.
    return record.model_copy(update={"caller": request.app[_PARAMS_KEY].present_caller(record.caller)})


async def _list_calls(request: web.Request) -> web.Response:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise _error(web.HTTPBadRequest, f"limit must be an integer from 1 to {MAX_LIMIT}")
    try:
        calls = await request.app[_STORE_KEY].list(limit)
    except StoreError as exc:
        log.warning("listing call records failed: %s", exc)
        raise _error(web.HTTPServiceUnavailable, "call records are unavailable") from exc
    RECORD_READS.labels("list").inc()
    audit.info("call records listed by %s: %s", _reader(request), ",".join(c.call_id for c in calls) or "none")
    return _json(CallList(calls=[_shown(request, c) for c in calls]))


def _reader(request: web.Request) -> str:
    return request.get(READER) or "anonymous"


async def _get_call(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    try:
        record = await request.app[_STORE_KEY].get(call_id)
    except StoreError as exc:
        log.warning("reading call record %s failed: %s", call_id, exc)
        raise _error(web.HTTPServiceUnavailable, "call records are unavailable") from exc
    if record is None:
        raise _error(web.HTTPNotFound, "unknown call")
    RECORD_READS.labels("one").inc()
    audit.info("call record %s read by %s", call_id, _reader(request))
    return _json(_shown(request, record))


def setup_routes(app: web.Application, records_store: RecordStore, params: RecordsParams | None = None) -> None:
    """Add `GET /v1/calls?limit=N` and `GET /v1/calls/{call_id}` to `app`."""
    app[_STORE_KEY] = records_store
    app[_PARAMS_KEY] = params or RecordsParams()
    app.router.add_get("/v1/calls", _list_calls)
    app.router.add_get("/v1/calls/{call_id}", _get_call)
