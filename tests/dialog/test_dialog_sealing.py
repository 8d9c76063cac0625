"""Call records and dialog context at rest: AES-GCM with rotating keys, or plaintext (and a warning)."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from dialog.context import RedisContextStore
from dialog.records import CallRecord, RedisRecordStore
from dialog.sealing import Sealer, SealingError, SealingParams, open_sealer, read_key_file
from dialog.state import CallContext, Turn
from dialog.storage import StoreDataError

pytestmark = pytest.mark.redis


def _key_file(path: Path, *ids: str) -> Path:
    lines = ["# dialog keys, newest last", *(f"{i} {base64.b64encode(os.urandom(32)).decode()}" for i in ids)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _record(call_id: str = "call-1") -> CallRecord:
    turn = Turn(at=1.0, node="account_number", event="dtmf", dtmf="4719#")
    return CallRecord(call_id=call_id, caller="+15550142", transport="sip", started_at=datetime.now(UTC), turns=[turn])


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    yield c
    await c.aclose()


async def test_records_and_context_are_sealed_and_open_after_a_rotation(
    tmp_path: Path, client: aioredis.Redis, prefix: str
) -> None:
    old = open_sealer(SealingParams(key_file=_key_file(tmp_path / "keys", "2026-11")))
    records = RedisRecordStore(client, prefix, sealer=old)
    contexts = RedisContextStore(client, prefix, sealer=old)
    await records.save(_record())
    context = CallContext(call_id="call-1", flow_id="demo", slots={"account_number": "47192233"})
    await contexts.put(context, [Turn(at=1.0, node="n", event="dtmf", dtmf="47192233")])
    raw_record = await client.get(f"{prefix}record:call-1")
    raw_hash = await client.hgetall(f"{prefix}call:call-1")
    raw_turns = await client.lrange(f"{prefix}call:call-1:turns", 0, -1)
    for raw in (raw_record, raw_hash["data"], *raw_turns):
        assert raw.startswith("aesgcm:2026-11:") and "4719" not in raw and "+1555" not in raw
    # A new key is appended and made active: old data still opens, new data uses the new key.
    keys = tmp_path / "keys"
    keys.write_text(keys.read_text() + f"2026-12 {base64.b64encode(os.urandom(32)).decode()}\n")
    new = open_sealer(SealingParams(key_file=keys))
    assert new.active == "2026-12"
    records = RedisRecordStore(client, prefix, sealer=new)
    contexts = RedisContextStore(client, prefix, sealer=new)
    got = await records.get("call-1")
    assert got is not None and got.turns[0].dtmf == "4719#"
    ctx = await contexts.get("call-1")
    assert ctx is not None and ctx.slots == {"account_number": "47192233"}
    assert (await contexts.turns("call-1"))[0].dtmf == "47192233"
    await records.save(_record("call-2"))
    assert (await client.get(f"{prefix}record:call-2")).startswith("aesgcm:2026-12:")
    assert [r.call_id for r in await records.list(5)] == ["call-2", "call-1"]


async def test_unknown_key_and_moved_values_do_not_open(tmp_path: Path, client: aioredis.Redis, prefix: str) -> None:
    sealer = open_sealer(SealingParams(key_file=_key_file(tmp_path / "keys", "a")))
    records = RedisRecordStore(client, prefix, sealer=sealer)
    await records.save(_record("call-1"))
    # A sealed value copied under another call's key does not open there (bound to its key).
    await client.set(f"{prefix}record:call-9", await client.get(f"{prefix}record:call-1"))
    with pytest.raises(StoreDataError):
        await records.get("call-9")
    other = open_sealer(SealingParams(key_file=_key_file(tmp_path / "other", "b")))
    with pytest.raises(StoreDataError, match="not configured"):
        await RedisRecordStore(client, prefix, sealer=other).get("call-1")
    with pytest.raises(StoreDataError, match="not configured"):
        await RedisRecordStore(client, prefix).get("call-1")  # sealed data, no keys


async def test_without_a_key_file_data_is_plaintext_and_the_log_says_so(
    client: aioredis.Redis, prefix: str, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="dialog.sealing"):
        sealer = open_sealer(SealingParams())
    assert not sealer.encrypting
    assert any("plaintext" in r.message for r in caplog.records)
    records = RedisRecordStore(client, prefix, sealer=sealer)
    await records.save(_record())
    raw = await client.get(f"{prefix}record:call-1")
    assert raw.startswith("{") and CallRecord.model_validate_json(raw).call_id == "call-1"


def test_key_file_and_sealer_validation(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("only-an-id\n")
    with pytest.raises(ValueError, match="expected"):
        read_key_file(bad)
    bad.write_text("k1 !!!\n")
    with pytest.raises(ValueError, match="base64"):
        read_key_file(bad)
    with pytest.raises(ValueError, match="32"):
        Sealer({"k1": b"short"})
    with pytest.raises(ValueError, match="not in the key file"):
        open_sealer(SealingParams(key_file=_key_file(tmp_path / "keys", "k1"), active_key="k2"))
    sealer = Sealer({"k1": os.urandom(32), "k2": os.urandom(32)}, active="k1")
    sealed = sealer.seal("secret", "key")
    assert sealed.startswith("aesgcm:k1:") and sealer.open(sealed, "key") == "secret"
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SealingError):
        sealer.open(tampered, "key")
