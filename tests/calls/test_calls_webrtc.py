"""WebRTC callers against a running voicenav: the aiortc client and headless Chromium on the softphone
page each say what they want and land in the right queue."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from callers import PEERS, PEERS_PY, WORK, Running, manifest, run_bounded, running_service, wav_8k, wav_48k

from tests.webrtc.webrtc_testkit import token_for_tokenless_peers

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
]

AIORTC_CLIENT = PEERS / "webrtc" / "aiortc_client.py"
DRIVER = PEERS / "webrtc" / "drive_playwright.js"
chromium_usable = (
    DRIVER.exists()
    and shutil.which("node") is not None
    and Path("/usr/bin/chromium").exists()
    and (WORK / "node" / "node_modules" / "playwright-core").exists()
)


UPLOADS: list[dict[str, Any]] = []  # what the softphone page reports when its call is over


async def _upload(request: web.Request) -> web.Response:
    got: dict[str, Any] = {}
    async for part in await request.multipart():
        got[part.name] = await part.read()
    UPLOADS.append(got)
    return web.json_response({"ok": True})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Running]:
    def test_routes(app: web.Application) -> None:
        app.router.add_post("/test/upload", _upload)
        app.middlewares.append(token_for_tokenless_peers)

    async with running_service(extra_routes=test_routes, public_paths=("/test/upload",)) as running:
        yield running


async def _webrtc_records(server: Running) -> set[str]:
    _, body = await server.get("/v1/calls?limit=200")
    return {c["call_id"] for c in body["calls"] if c["transport"] == "webrtc"}


async def _new_record(server: Running, before: set[str], within: float = 20.0) -> dict:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        _, body = await server.get("/v1/calls?limit=200")
        new = [
            c
            for c in body["calls"]
            if c["transport"] == "webrtc" and c["call_id"] not in before and c["outcome"] is not None
        ]
        if new:
            return new[0]
        assert loop.time() < deadline, body
        await asyncio.sleep(0.2)


@pytest.mark.skipif(not (AIORTC_CLIENT.exists() and PEERS_PY.exists()), reason="aiortc peer not installed")
@pytest.mark.parametrize("codec", ["opus", "pcmu"])
async def test_aiortc_caller_is_routed(server: Running, codec: str, tmp_path: Path) -> None:
    utterance = "dev033"
    before = await _webrtc_records(server)
    wav = wav_8k(utterance, tmp_path, lead_s=0.5, tail_s=2.0)
    rc, out = await run_bounded(
        PEERS_PY,
        AIORTC_CLIENT,
        "--url",
        f"{server.http}/webrtc",
        "--codec",
        codec,
        "--wav",
        wav,
        "--seconds",
        "14",
        "--out",
        tmp_path / "rtc",
        limit_s=45,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert rc == 0, out
    record = await _new_record(server, before)
    assert record["outcome"] == {"route": manifest()[utterance]["intent"]}, record
    assert any(t["event"] == "utterance" and t["transcript"] for t in record["turns"])


@pytest.mark.skipif(not chromium_usable, reason="chromium / playwright-core not installed")
async def test_chromium_softphone_is_routed(server: Running, tmp_path: Path) -> None:
    utterance = "dev038"
    before = await _webrtc_records(server)
    mic = wav_48k(utterance, tmp_path, lead_s=1.5, tail_s=2.0)
    UPLOADS.clear()
    page = f"{server.http}/?autotest=1&hangup_after_ms=25000&upload=/test/upload"
    rc, out = await run_bounded("node", DRIVER, page, mic, "40000", limit_s=60, env={"PEERS_TMP": str(tmp_path)})
    assert rc == 0, out
    assert "page finished: DONE" in out, out
    record = await _new_record(server, before)
    queue = manifest()[utterance]["intent"]
    assert record["outcome"] == {"route": queue}, (record, out[-2000:])
    # The page was shown the prompt, what the caller said, and where the call went.
    assert len(UPLOADS) == 1, out[-2000:]
    report = json.loads(UPLOADS[0]["report"])
    kinds = {e.get("type") for e in report["events"]}
    assert {"prompt", "transcript", "route"} <= kinds, report["events"]
    assert {"type": "route", "queue": queue} in report["events"]
