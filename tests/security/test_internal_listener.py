"""`http.internal_port`: the operators' routes (/metrics, call records, the hot-word admin API) leave
the public port for the internal one, where /metrics may go without a token and the rest keep their
roles; callers' routes stay on the public port only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from dialog.records import CallRecord
from hotwords.auth import AdminAuth
from ivr.app.config import AppConfig
from ivr.app.routes import build_app, build_internal_app
from tests.security.conftest import REDIS_URL, Unloaded
from tests.security.test_http_access import TOKENS, bearer

pytestmark = pytest.mark.redis


@pytest.fixture
async def split() -> AsyncIterator[tuple[TestClient, TestClient, Unloaded]]:
    prefix = f"voicenav-internal-test:{uuid.uuid4().hex}:"
    service = Unloaded(
        AppConfig(
            redis={"url": REDIS_URL},
            dialog={"key_prefix": f"{prefix}dialog:"},
            hotwords={"key_prefix": f"{prefix}hotwords"},
            http={"internal_port": 0, "access": {"metrics_public": True}},
        )
    )
    auth = AdminAuth.parse(TOKENS)
    public = TestClient(TestServer(build_app(service, auth=auth)))
    internal = TestClient(TestServer(build_internal_app(service, auth=auth)))
    await public.start_server()
    await internal.start_server()
    try:
        yield public, internal, service
    finally:
        # as `voicenav serve` does: the internal app first, the public one stops the service
        await internal.close()
        await public.close()
        client = aioredis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_operator_routes_are_on_the_internal_port_only(split: tuple[TestClient, TestClient, Unloaded]) -> None:
    public, internal, service = split
    started = datetime.now(UTC)
    await service.records.save(
        CallRecord(call_id="call-1", caller="+15550100", transport="sip", started_at=started, ended_at=started)
    )
    operator = [("/metrics", "tok-reader"), ("/v1/calls", "tok-reader"), ("/v1/calls/call-1", "tok-reader")]
    operator.append(("/v1/hotwords", "tok-admin"))
    for path, token in operator:
        # not there at all, even for the right token
        assert (await public.get(path, headers=bearer(token))).status == 404, path
        assert (await internal.get(path, headers=bearer(token))).status == 200, path

    # Prometheus scrapes without a token; records and hot words keep their roles.
    resp = await internal.get("/metrics")
    assert resp.status == 200 and "voicenav_http_denied_total" in await resp.text()
    assert (await internal.get("/v1/calls")).status == 401
    assert (await internal.get("/v1/calls", headers=bearer("tok-admin"))).status == 403
    resp = await internal.get("/v1/calls/call-1", headers=bearer("tok-reader"))
    assert (await resp.json())["caller"] == "+****0100"  # masked, as every record answer by default
    assert (await internal.get("/v1/hotwords", headers=bearer("tok-reader"))).status == 403

    # Callers' routes are the public port's alone.
    for path in ("/healthz", "/readyz", "/", "/softphone/softphone.js", "/webrtc/token"):
        assert (await public.get(path)).status == 200, path
        assert (await internal.get(path, headers=bearer("tok-reader"))).status == 404, path
    assert (await public.post("/v1/recognize", data=b"x", headers=bearer("tok-asr"))).status == 503  # unloaded
    assert (await internal.post("/v1/recognize", data=b"x", headers=bearer("tok-asr"))).status == 404
