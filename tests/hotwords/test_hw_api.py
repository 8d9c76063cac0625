from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hotword_helpers import Instance, auth

from hotwords.api import setup_routes
from hotwords.auth import AdminAuth
from hotwords.codec import TokenCodec
from hotwords.config import HotwordsConfig
from hotwords.schema import HotwordList
from hotwords.service import HotwordService
from hotwords.store import RedisHotwordStore

Make = Callable[..., Awaitable[Instance]]
PRODUCTS = {
    "scope": "tenant:acme",
    "entries": [{"phrase": "Zentrix Unlimited", "boost": 4}, {"phrase": "Kestrava router"}],
}


async def current(instance: Instance, name: str = "products") -> tuple[int | None, list[str]]:
    record = await instance.store.get(name)
    return (None, []) if record is None else (record.version, [e.phrase for e in record.entries])


async def test_put_get_versions_rollback_delete(make_instance: Make) -> None:
    node = await make_instance()
    client = node.client
    resp = await node.put("products", PRODUCTS)
    assert resp.status == 201 and resp.headers["ETag"] == '"1"'
    body = await resp.json()
    assert body["list"]["updated_by"] == "alice" and body["rejected"] == []
    resp = await node.put("products", {"entries": [{"phrase": "NovaPay wallet"}]}, token="tok-bob")
    assert resp.status == 200
    assert (await resp.json())["list"]["updated_by"] == "bob"

    resp = await client.get("/v1/hotwords/products", headers=auth("tok-alice"))
    record = HotwordList.model_validate(await resp.json())
    assert (record.version, record.scope, [e.phrase for e in record.entries]) == (
        2,
        "global",
        ["NovaPay wallet"],
    )
    resp = await client.get("/v1/hotwords/products?version=1", headers=auth("tok-alice"))
    assert (await resp.json())["scope"] == "tenant:acme"
    resp = await client.get("/v1/hotwords/products/versions", headers=auth("tok-alice"))
    assert (await resp.json())["versions"] == [1, 2]
    resp = await client.get("/v1/hotwords", headers=auth("tok-alice"))
    assert [(s["name"], s["version"], s["phrases"]) for s in (await resp.json())["lists"]] == [("products", 2, 1)]

    resp = await client.post("/v1/hotwords/products/rollback?version=1", headers=auth("tok-alice"))
    assert resp.status == 200 and (await resp.json())["list"]["version"] == 3
    assert await current(node) == (3, ["Zentrix Unlimited", "Kestrava router"])

    resp = await client.delete("/v1/hotwords/products", headers=auth("tok-bob"))
    assert resp.status == 200 and (await resp.json())["deleted_version"] == 3
    assert (await client.get("/v1/hotwords/products", headers=auth("tok-alice"))).status == 404
    assert (await client.delete("/v1/hotwords/products", headers=auth("tok-bob"))).status == 404
    resp = await client.get("/v1/hotwords/products/audit", headers=auth("tok-alice"))
    trail = [(r["action"], r["by"], r["old_version"], r["new_version"]) for r in (await resp.json())["records"]]
    assert trail == [
        ("delete", "bob", 3, None),
        ("rollback", "alice", 2, 3),
        ("put", "bob", 1, 2),
        ("put", "alice", None, 1),
    ]


async def test_text_and_csv_uploads(make_instance: Make) -> None:
    node = await make_instance()
    resp = await node.client.put(
        "/v1/hotwords/plain?scope=flow:sales",
        data="# products\nZentrix Unlimited\n\nOrbilo Family\n",
        headers={**auth("tok-alice"), "Content-Type": "text/plain; charset=utf-8"},
    )
    assert resp.status == 201
    record = await node.store.get("plain")
    assert record is not None and record.scope == "flow:sales"
    assert [e.phrase for e in record.entries] == ["Zentrix Unlimited", "Orbilo Family"]
    resp = await node.client.put(
        "/v1/hotwords/csv?scope=node:sales/menu",
        data='phrase,boost\nZentrix Unlimited,5\n"Velmont Fiber, Gold",2.5\nQubitel roaming\n',
        headers={**auth("tok-alice"), "Content-Type": "text/csv"},
    )
    assert resp.status == 201
    record = await node.store.get("csv")
    assert record is not None
    assert [(e.phrase, e.boost) for e in record.entries] == [
        ("Zentrix Unlimited", 5.0),
        ("Velmont Fiber, Gold", 2.5),
        ("Qubitel roaming", None),
    ]


async def test_unrepresentable_phrases_are_reported_and_left_out(make_instance: Make) -> None:
    node = await make_instance()
    body = {
        "entries": [
            {"phrase": "Zentrix"},
            {"phrase": "<|endoftext|>"},
            {"phrase": " ".join(["Kestrava"] * 8)},
        ]
    }
    resp = await node.put("products", body)
    assert resp.status == 201
    rejected = {r["phrase"]: r["reason"] for r in (await resp.json())["rejected"]}
    assert rejected == {"<|endoftext|>": "not_representable", " ".join(["Kestrava"] * 8): "too_many_tokens"}
    assert await current(node) == (1, ["Zentrix"])
    # strict: the whole upload fails and nothing changes
    resp = await node.put(
        "products", {"entries": [{"phrase": "Orbilo"}, {"phrase": "<|endoftext|>"}]}, params={"strict": "1"}
    )
    assert resp.status == 422
    assert await current(node) == (1, ["Zentrix"])
    # nothing representable left: fails rather than storing an empty list
    resp = await node.put("products", {"entries": [{"phrase": "<|endoftext|>"}]})
    assert resp.status == 422
    assert await current(node) == (1, ["Zentrix"])


@pytest.mark.parametrize(
    ("headers", "data", "status", "points_at"),
    [
        ({"Authorization": ""}, None, 401, None),
        ({"Authorization": "Bearer wrong"}, None, 401, None),
        ({"Authorization": "tok-alice"}, None, 401, None),
        ({"Content-Type": "application/xml"}, "<x/>", 415, None),
        ({"Content-Type": "text/csv"}, "Orbilo,2\nKestrava,lots\n", 422, {"line": 2}),
        ({"Content-Type": "text/csv"}, 'Orbilo,2\n"broken,3\n', 422, {"line": 2}),
        ({"Content-Type": "text/plain"}, "Orbilo\nVelmont\nORBILO\n", 422, {"entry": 2, "line": 3}),
        (
            {"Content-Type": "application/json"},
            '{"entries": [{"phrase": "a"}, {"phrase": "b", "boost": 99}]}',
            422,
            {"entry": 1},
        ),
        ({"Content-Type": "application/json"}, '{"entries": [', 422, {"line": 1}),
        (
            {"Content-Type": "application/json"},
            '{"scope": "planet:x", "entries": []}',
            422,
            {"loc": ["scope"]},
        ),
        ({"Content-Type": "text/plain"}, "x" * 5000, 413, None),
        ({"Content-Type": "text/plain"}, b"Zentrix \xff\n", 422, None),
        ({"If-Match": '"7"', "Content-Type": "text/plain"}, "Orbilo\n", 409, None),
    ],
)
async def test_bad_uploads_change_nothing(
    make_instance: Make,
    headers: dict[str, str],
    data: str | bytes | None,
    status: int,
    points_at: dict | None,
) -> None:
    node = await make_instance(max_body_bytes=4096)
    assert (await node.put("products", PRODUCTS)).status == 201
    before = await node.store.get("products")
    sent = {"Authorization": "Bearer tok-bob", **headers}
    if not sent["Authorization"]:
        del sent["Authorization"]
    resp = await node.client.put("/v1/hotwords/products", data=data or "Orbilo\n", headers=sent)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["error"]
    if points_at is not None:
        assert any(points_at.items() <= item.items() for item in body["detail"]), body
    assert await node.store.get("products") == before
    assert await node.store.versions("products") == [1]
    assert len(await node.store.audit("products")) == 1


async def test_every_admin_route_needs_a_token(make_instance: Make) -> None:
    node = await make_instance()
    client = node.client
    for method, path in [
        ("GET", "/v1/hotwords"),
        ("GET", "/v1/hotwords/products"),
        ("DELETE", "/v1/hotwords/products"),
        ("POST", "/v1/hotwords/products/rollback?version=1"),
        ("GET", "/v1/hotwords/products/audit"),
        ("GET", "/v1/hotwords/products/versions"),
    ]:
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_if_match_and_bad_parameters(make_instance: Make) -> None:
    node = await make_instance()
    client = node.client
    assert (await node.put("products", PRODUCTS, headers={"If-Match": "0"})).status == 201
    assert (await node.put("products", PRODUCTS, headers={"If-Match": "0"})).status == 409
    assert (await node.put("products", PRODUCTS, headers={"If-Match": '"1"'})).status == 200
    assert (await client.get("/v1/hotwords/products?version=abc", headers=auth("tok-alice"))).status == 400
    assert (await client.get("/v1/hotwords/products?version=9", headers=auth("tok-alice"))).status == 404
    assert (await client.post("/v1/hotwords/products/rollback", headers=auth("tok-alice"))).status == 400
    assert (await client.post("/v1/hotwords/products/rollback?version=9", headers=auth("tok-alice"))).status == 404
    assert (await client.get("/v1/hotwords/Bad%20Name", headers=auth("tok-alice"))).status == 404


async def test_openapi_document(make_instance: Make) -> None:
    node = await make_instance()
    resp = await node.client.get("/v1/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert {"HotwordListIn", "HotwordList", "UploadResult", "Entry", "ErrorBody"} <= set(doc["components"]["schemas"])
    put = doc["paths"]["/v1/hotwords/{name}"]["put"]
    assert set(put["requestBody"]["content"]) == {"application/json", "text/plain", "text/csv"}
    entry = doc["components"]["schemas"]["Entry"]["properties"]["boost"]
    assert "exclusiveMinimum" in str(entry) and "maximum" in str(entry)


async def test_oversized_chunked_upload_is_cut_off(make_instance: Make) -> None:
    node = await make_instance(max_body_bytes=4096)

    async def body() -> AsyncIterator[bytes]:
        for n in range(100):
            yield f"Zentrix model {n}\n".encode() * 10

    resp = await node.client.put(
        "/v1/hotwords/products", data=body(), headers={**auth("tok-alice"), "Content-Type": "text/plain"}
    )
    assert resp.status == 413
    assert await node.store.get("products") is None


async def test_store_outage_is_a_clear_503(codec: TokenCodec, prefix: str) -> None:
    config = HotwordsConfig()
    store = RedisHotwordStore.connect("redis://127.0.0.1:1/0", prefix)
    app = web.Application()
    setup_routes(app, HotwordService(store, codec, config), AdminAuth({"ops": "t"}))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        resp = await client.put("/v1/hotwords/products", json=PRODUCTS, headers=auth("t"))
        assert resp.status == 503
        assert "store unavailable" in (await resp.json())["error"]
        assert (await client.get("/v1/hotwords", headers=auth("t"))).status == 503
    await store.close()


async def test_latin1_text_upload_is_decoded_by_its_charset(make_instance: Make) -> None:
    node = await make_instance()
    resp = await node.client.put(
        "/v1/hotwords/products",
        data="Café Zentrix\n".encode("latin-1"),
        headers={**auth("tok-alice"), "Content-Type": "text/plain; charset=latin-1"},
    )
    assert resp.status == 201
    assert await current(node) == (1, ["Café Zentrix"])
