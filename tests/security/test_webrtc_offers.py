"""WebRTC offers on the real app: a single-use token from /webrtc/token, JSON only, Origin checked,
token issuance limited per address, and tokenless floods never reach the endpoint's slots."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from hotwords.auth import AdminAuth
from ivr.app.auth import HttpAuthParams
from ivr.app.routes import build_app
from ivr.app.service import Service
from ivr.calls.ratelimit import BucketParams
from ivr.webrtc.offer_guard import OfferGuardParams

JUNK_OFFER = {"sdp": "this is not sdp", "type": "offer"}  # past the guard, the endpoint answers 400


async def client_for(service: Service, guard: OfferGuardParams, http: HttpAuthParams | None = None) -> TestClient:
    app = build_app(service, auth=AdminAuth({"ops": "tok"}), http_auth=http, offer_guard=guard)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def token(client: TestClient) -> str:
    resp = await client.get("/webrtc/token")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    return (await resp.json())["token"]


async def test_offers_need_json_and_a_fresh_token(service: Service) -> None:
    loose = OfferGuardParams(token_rate=BucketParams(rate_per_s=100, burst=100))
    client = await client_for(service, loose, HttpAuthParams(auth_failures=BucketParams(rate_per_s=1, burst=100)))
    try:
        resp = await client.post("/webrtc/offer", json=JUNK_OFFER)
        assert resp.status == 401 and "missing offer token" in (await resp.json())["detail"]
        # text/plain is what a cross-site page can post without a preflight: refused before the token
        resp = await client.post(
            "/webrtc/offer",
            data='{"sdp": "v=0", "type": "offer"}',
            headers={"Content-Type": "text/plain", "X-Offer-Token": await token(client)},
        )
        assert resp.status == 415
        good = await token(client)
        resp = await client.post("/webrtc/offer", json=JUNK_OFFER, headers={"X-Offer-Token": good})
        assert resp.status == 400 and (await resp.json())["error"] == "no-audio"
        resp = await client.post("/webrtc/offer", json=JUNK_OFFER, headers={"X-Offer-Token": good})
        assert resp.status == 401 and "spent" in (await resp.json())["detail"]  # single use
        forged = good.rsplit(".", 1)[0] + ".AAAA"
        assert (await client.post("/webrtc/offer", json=JUNK_OFFER, headers={"X-Offer-Token": forged})).status == 401

        # a browser names the page's origin: this host's own page may call, another site's may not
        same = f"http://{client.server.host}:{client.server.port}"
        for origin, status in (("https://evil.example", 403), (same, 400)):
            headers = {"X-Offer-Token": await token(client), "Origin": origin}
            assert (await client.post("/webrtc/offer", json=JUNK_OFFER, headers=headers)).status == status
        assert (await client.get("/webrtc/token", headers={"Origin": "https://evil.example"})).status == 403
    finally:
        await client.close()


async def test_allowed_origins_replace_the_same_host_rule(service: Service) -> None:
    guard = OfferGuardParams(allowed_origins=("https://phone.example",))
    client = await client_for(service, guard)
    try:
        for origin, status in (("https://phone.example", 400), (f"http://{client.server.host}", 403)):
            headers = {"X-Offer-Token": await token(client), "Origin": origin}
            assert (await client.post("/webrtc/offer", json=JUNK_OFFER, headers=headers)).status == status
    finally:
        await client.close()


async def test_token_issuance_is_limited_and_tokenless_floods_take_no_slots(service: Service) -> None:
    client = await client_for(service, OfferGuardParams(token_rate=BucketParams(rate_per_s=0.05, burst=3)))
    try:
        statuses = [(await client.get("/webrtc/token")).status for _ in range(5)]
        assert statuses == [200] * 3 + [429] * 2
        assert int((await client.get("/webrtc/token")).headers["Retry-After"]) >= 1

        # the flood of the report: 40 text/plain offers without a token
        body = '{"sdp": "v=0", "type": "offer"}'
        statuses = [
            (await client.post("/webrtc/offer", data=body, headers={"Content-Type": "text/plain"})).status
            for _ in range(40)
        ]
        assert set(statuses) == {415} and service.webrtc.active_calls == 0
        # with JSON but no token: 401 until the source has failed too often, then 429
        statuses = [(await client.post("/webrtc/offer", json=JUNK_OFFER)).status for _ in range(12)]
        assert statuses == [401] * 10 + [429] * 2 and service.webrtc.active_calls == 0
    finally:
        await client.close()
