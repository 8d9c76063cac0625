"""Access control of the HTTP routes on the real app: tokens with roles, 401/403, 429 limits, CORS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dialog.records import CallRecord
from hotwords.auth import AdminAuth
from ivr.app.auth import HttpAuthParams
from ivr.app.routes import build_app
from ivr.app.service import Service
from ivr.calls.ratelimit import BucketParams

pytestmark = pytest.mark.redis

TOKENS = "ops:admin:tok-admin\nauditor:reader:tok-reader\nasr:recognize:tok-asr\n"
GUARDED = [("GET", "/v1/calls"), ("GET", "/v1/calls/call-1"), ("POST", "/v1/recognize"), ("GET", "/metrics")]
PUBLIC = ["/healthz", "/readyz", "/", "/softphone/softphone.js"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def client_for(service: Service, params: HttpAuthParams | None = None) -> TestClient:
    client = TestClient(TestServer(build_app(service, auth=AdminAuth.parse(TOKENS), http_auth=params)))
    await client.start_server()
    return client


async def test_guarded_routes_need_a_token_with_the_right_role(service: Service) -> None:
    started = datetime.now(UTC)
    await service.records.save(
        CallRecord(call_id="call-1", caller="+15550100", transport="sip", started_at=started, ended_at=started)
    )
    # this test makes many failed attempts on purpose; the limit on them has its own test
    client = await client_for(service, HttpAuthParams(auth_failures=BucketParams(rate_per_s=1, burst=100)))
    try:
        for method, path in GUARDED:
            resp = await client.request(method, path)
            assert resp.status == 401, (method, path)
            assert resp.headers["WWW-Authenticate"] == 'Bearer realm="voicenav"'
            assert (await resp.json())["detail"] == "missing bearer token"
            resp = await client.request(method, path, headers=bearer("not-a-token"))
            assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        for path in PUBLIC:
            assert (await client.get(path)).status in (200, 503), path  # /readyz: 503 while unloaded
        assert (await client.get("/no/such/route")).status == 401  # unknown routes are not open either

        resp = await client.get("/v1/calls", headers=bearer("tok-reader"))
        assert resp.status == 200 and [c["caller"] for c in (await resp.json())["calls"]] == ["+****0100"]
        assert (await client.get("/v1/calls/call-1", headers=bearer("tok-reader"))).status == 200
        assert "voicenav_http_denied_total" in await (await client.get("/metrics", headers=bearer("tok-reader"))).text()

        for token in ("tok-admin", "tok-asr"):
            resp = await client.get("/v1/calls", headers=bearer(token))
            assert resp.status == 403 and "reader" in (await resp.json())["detail"]
        assert (await client.post("/v1/recognize", data=b"x", headers=bearer("tok-reader"))).status == 403
        # the recognize role gets past access control: the unloaded recognizer answers
        assert (await client.post("/v1/recognize", data=b"x", headers=bearer("tok-asr"))).status == 503
        # the hot-word API: a reader token is known but may not write lists
        assert (await client.get("/v1/hotwords", headers=bearer("tok-reader"))).status == 403
        assert (await client.get("/v1/hotwords")).status == 401
        assert (await client.get("/v1/hotwords", headers=bearer("tok-admin"))).status == 200
    finally:
        await client.close()


async def test_failed_tokens_and_recognition_are_rate_limited(service: Service) -> None:
    params = HttpAuthParams(
        auth_failures=BucketParams(rate_per_s=0.01, burst=5), recognize=BucketParams(rate_per_s=0.01, burst=3)
    )
    client = await client_for(service, params)
    try:
        statuses = [(await client.get("/v1/calls", headers=bearer("guess"))).status for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        resp = await client.get("/v1/calls", headers=bearer("tok-reader"))
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1  # the source is blocked, not the token
        assert (await client.get("/healthz")).status == 200  # public routes stay open to it

        other = await client_for(service, params)  # a fresh limiter: recognition per token identity
        try:
            statuses = [
                (await other.post("/v1/recognize", data=b"x", headers=bearer("tok-asr"))).status for _ in range(5)
            ]
            assert statuses == [503] * 3 + [429] * 2
        finally:
            await other.close()
    finally:
        await client.close()


async def test_cors_is_closed_unless_configured(service: Service) -> None:
    origin = {"Origin": "https://evil.example"}
    closed = await client_for(service)
    try:
        resp = await closed.get("/v1/calls", headers={**origin, **bearer("tok-reader")})
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        assert (await closed.options("/v1/calls", headers=origin)).status in (401, 405)
    finally:
        await closed.close()
    portal = {"Origin": "https://portal.example"}
    opened = await client_for(service, HttpAuthParams(cors_origins=("https://portal.example",)))
    try:
        resp = await opened.options("/v1/calls", headers=portal)
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://portal.example"
        resp = await opened.get("/v1/calls", headers={**portal, **bearer("tok-reader")})
        assert resp.headers["Access-Control-Allow-Origin"] == "https://portal.example"
        resp = await opened.get("/v1/calls", headers={**origin, **bearer("tok-reader")})
        assert "Access-Control-Allow-Origin" not in resp.headers
    finally:
        await opened.close()


def test_token_file_roles_and_old_forms() -> None:
    auth = AdminAuth.parse("legacy-token\nalice:s3:cr:et\nbob:reader,recognize:tok-b\ncarol:admin:tok-c\n")
    admin = auth.authenticate("Bearer legacy-token")
    assert admin is not None and (admin.identity, admin.roles) == ("admin", frozenset({"admin"}))
    alice = auth.authenticate("Bearer s3:cr:et")  # an old-form token with colons keeps working
    assert alice is not None and alice.roles == frozenset({"admin"})
    bob = auth.authenticate("Bearer tok-b")
    assert bob is not None and bob.roles == frozenset({"reader", "recognize"})
    assert auth.identify("Bearer tok-b") is None  # not an admin
    assert auth.identify("Bearer tok-c") == "carol"
    with pytest.raises(ValueError, match="roles"):
        AdminAuth({"x": "t"}, {"x": ["superuser"]})
