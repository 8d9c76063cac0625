"""The hot-word API answers as `/v1/openapi.json` says, for whatever schemathesis sends: generated
requests (valid and not) against the real app on a loopback port, on Redis under a fresh prefix."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from hotwords.api import openapi_document
from hotwords.auth import AdminAuth
from ivr.app.auth import HttpAuthParams
from ivr.app.config import AppConfig
from ivr.app.routes import build_app
from ivr.calls.ratelimit import BucketParams
from tests.security.conftest import REDIS_URL, Unloaded

pytestmark = pytest.mark.redis

TOKENS = "ops:admin:tok-admin\nauditor:reader:tok-reader\n"
ADMIN = {"Authorization": "Bearer tok-admin"}

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The app served from its own event loop in a thread, since schemathesis' client blocks."""
    prefix = f"voicenav-schemathesis:{uuid.uuid4().hex}:"
    service = Unloaded(
        AppConfig(
            redis={"url": REDIS_URL},
            dialog={"key_prefix": f"{prefix}dialog:"},
            hotwords={"key_prefix": f"{prefix}hotwords"},
        )
    )
    # generated requests without a token are failed attempts too; their limit is tested elsewhere
    http_auth = HttpAuthParams(auth_failures=BucketParams(rate_per_s=1000, burst=100_000))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="schemathesis-app", daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(build_app(service, auth=AdminAuth.parse(TOKENS), http_auth=http_auth))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def test_served_document_is_the_one_tested(base_url: str) -> None:
    resp = requests.get(f"{base_url}/v1/openapi.json", headers={"Authorization": "Bearer tok-reader"}, timeout=10)
    assert resp.status_code == 200 and resp.json() == openapi_document()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, base_url: str) -> None:
    excluded = []
    if case.method == "PUT":
        # A list's validity includes rules JSON Schema cannot state (phrase length after NFKC and
        # whitespace cleaning, duplicates after normalization): such a list gets the documented 422.
        excluded.append(positive_data_acceptance)
    if (case.media_type or "").startswith("text/"):
        # a text/plain or text/csv body is any string: a "schema-violating" one is just other text
        excluded.append(negative_data_rejection)
    case.call_and_validate(base_url=base_url, headers=ADMIN, timeout=10, excluded_checks=excluded)


def test_a_deleted_list_is_gone_for_readers_until_restored(base_url: str) -> None:
    url = f"{base_url}/v1/hotwords/deleted-list"
    body = {"entries": [{"phrase": "Zentrix Unlimited"}]}
    assert requests.put(url, json=body, headers=ADMIN, timeout=10).status_code == 201
    assert requests.delete(url, headers=ADMIN, timeout=10).status_code == 200
    for path in ("?version=1", "/versions"):
        resp = requests.get(url + path, headers=ADMIN, timeout=10)
        assert resp.status_code == 404 and resp.headers["Content-Type"].startswith("application/json"), path
    assert requests.get(url + "/audit", headers=ADMIN, timeout=10).json()["records"][0]["action"] == "delete"
    resp = requests.post(url + "/rollback?version=1", headers=ADMIN, timeout=10)
    assert resp.status_code == 200 and resp.json()["list"]["version"] == 3
    assert requests.get(url + "?version=1", headers=ADMIN, timeout=10).status_code == 200


def test_unknown_query_parameters_and_methods_are_refused(base_url: str) -> None:
    url = f"{base_url}/v1/hotwords/typo"
    resp = requests.put(url + "?strcit=true", json={"entries": []}, headers=ADMIN, timeout=10)
    assert resp.status_code == 400 and "strcit" in resp.json()["error"]
    resp = requests.post(url, headers=ADMIN, timeout=10)
    assert resp.status_code == 405 and resp.headers["Allow"] == "DELETE,GET,HEAD,PUT"
    assert requests.get(f"{base_url}/v1/hotwords/Not_A_Name", headers=ADMIN, timeout=10).status_code == 404
