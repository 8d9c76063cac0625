"""Reading call records over HTTP is audited with who read them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dialog.records import READER, RECORD_READS, CallRecord, MemoryRecordStore, RecordsParams, setup_routes


async def _app(reader: str | None) -> tuple[web.Application, MemoryRecordStore]:
    store = MemoryRecordStore()
    await store.save(CallRecord(call_id="c1", caller="x", transport="sip", started_at=datetime.now(UTC)))

    @web.middleware
    async def identify(request: web.Request, handler):
        if reader is not None:
            request[READER] = reader
        return await handler(request)

    app = web.Application(middlewares=[identify])
    setup_routes(app, store)
    return app, store


async def test_reads_are_logged_and_counted_with_the_reader(caplog) -> None:
    for reader, shown in (("alice@ops", "alice@ops"), (None, "anonymous")):
        app, _ = await _app(reader)
        one, listed = RECORD_READS.labels("one")._value.get(), RECORD_READS.labels("list")._value.get()
        caplog.clear()
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            with caplog.at_level(logging.INFO, logger="voicenav.audit"):
                assert (await client.get("/v1/calls/c1")).status == 200
                assert (await client.get("/v1/calls?limit=5")).status == 200
                assert (await client.get("/v1/calls/nope")).status == 404
        lines = [r.getMessage() for r in caplog.records if r.name == "voicenav.audit"]
        assert lines == [f"call record c1 read by {shown}", f"call records listed by {shown}: c1"]
        assert RECORD_READS.labels("one")._value.get() == one + 1
        assert RECORD_READS.labels("list")._value.get() == listed + 1


async def test_answers_show_the_caller_masked_unless_configured_raw() -> None:
    store = MemoryRecordStore()
    # A record written before masking was the default, with the number whole.
    await store.save(
        CallRecord(call_id="c1", caller="sip:5551234567@gw", transport="sip", started_at=datetime.now(UTC))
    )
    for params, shown in ((None, "sip:******4567@gw"), (RecordsParams(caller_ids="raw"), "sip:5551234567@gw")):
        app = web.Application()
        setup_routes(app, store, params)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            assert (await (await client.get("/v1/calls/c1")).json())["caller"] == shown
            assert [c["caller"] for c in (await (await client.get("/v1/calls")).json())["calls"]] == [shown]
