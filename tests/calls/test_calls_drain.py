"""`voicenav serve` as its own process: a full instance refuses calls (503 + Retry-After); SIGTERM
while a call is up drains it — /readyz 503, a new INVITE 503 with Retry-After, a new WebRTC offer 503 —
the call in progress completes (and is recorded in Redis), then the process exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientError, ClientSession, ClientTimeout
from callers import (
    MODEL_CACHE,
    PROMPT_CACHE,
    REDIS_URL,
    ROOT,
    manifest,
    poll,
    sipp_call,
    sipp_scenario,
    ulaw_file,
)

from dialog.redact import mask_caller
from tests.ports import TCP, free_ports

pytestmark = [pytest.mark.peers, pytest.mark.redis, pytest.mark.timeout(150)]


async def _get(url: str) -> tuple[int, dict]:
    async with ClientSession(timeout=ClientTimeout(total=5)) as s, s.get(url) as r:
        return r.status, await r.json()


async def _invite_status(sip_port: int) -> str:
    """Send one INVITE over UDP and return the final response's status line and headers."""
    loop = asyncio.get_running_loop()
    responses: asyncio.Queue[str] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            responses.put_nowait(data.decode(errors="replace"))

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        branch = f"z9hG4bK-{uuid.uuid4().hex}"
        invite = "\r\n".join(
            [
                f"INVITE sip:ivr@127.0.0.1:{sip_port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport",
                f"From: <sip:late@127.0.0.1:{port}>;tag=late1",
                f"To: <sip:ivr@127.0.0.1:{sip_port}>",
                f"Call-ID: {uuid.uuid4().hex}@127.0.0.1",
                "CSeq: 1 INVITE",
                f"Contact: <sip:late@127.0.0.1:{port}>",
                "Max-Forwards: 70",
                "Content-Length: 0",
                "",
                "",
            ]
        )
        transport.sendto(invite.encode(), ("127.0.0.1", sip_port))
        async with asyncio.timeout(5):
            while True:
                msg = await responses.get()
                if int(msg.split(" ", 2)[1]) >= 200:
                    return msg
    finally:
        transport.close()


async def test_sigterm_drains_while_a_call_completes(tmp_path: Path) -> None:
    prefix = f"voicenav-test:{uuid.uuid4().hex}:"
    sip_port, http_port, internal_port, rtp = (
        free_ports(),
        free_ports(kinds=(TCP,)),
        free_ports(kinds=(TCP,)),
        free_ports(8),
    )
    http, internal = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{internal_port}"
    env = {
        "VOICENAV_RECOGNIZER__ENGINE__CACHE_DIR": str(MODEL_CACHE),
        "VOICENAV_PROMPTS__CACHE_DIR": str(PROMPT_CACHE),
        "VOICENAV_DIALOG__KEY_PREFIX": f"{prefix}dialog:",
        "VOICENAV_HOTWORDS__KEY_PREFIX": f"{prefix}hotwords",
        "VOICENAV_RTP__PORT_MIN": str(rtp),
        "VOICENAV_RTP__PORT_MAX": str(rtp + 7),
        "VOICENAV_SIP__TRANSPORTS": '["udp"]',
        "VOICENAV_CALLS__RETRY_AFTER_S": "9",
        # as deployed: /metrics on the internal port, without a token
        "VOICENAV_HTTP__INTERNAL_PORT": str(internal_port),
        "VOICENAV_HTTP__ACCESS__METRICS_PUBLIC": "true",
    }
    log_path = tmp_path / "serve.log"
    client = aioredis.from_url(REDIS_URL)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ivr.app.cli",
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(sip_port),
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--redis-url",
            REDIS_URL,
            "--drain-timeout",
            "60",
            "--max-calls",
            "1",
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(90):
                while True:
                    with contextlib.suppress(ClientError, OSError):  # not listening yet
                        if (await _get(f"{http}/readyz"))[0] == 200:
                            break
                    assert proc.returncode is None, log_path.read_text()
                    await asyncio.sleep(0.3)
            # A caller who listens to the prompt for 3 s, then asks for billing.
            audio = ulaw_file("dev031", tmp_path, lead_s=3.0)
            caller = f"drain-{uuid.uuid4().hex[:8]}"
            scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{audio},1,0"/>')
            call = asyncio.create_task(sipp_call(scenario, sip_port, tmp_path, limit_s=40))

            async def full() -> bool:
                # Full is still ready (Kubernetes keeps routing; SIP answers 503 + Retry-After).
                return await _get(f"{http}/readyz") == (200, {"status": "full", "active_calls": 1})

            async def draining() -> bool:
                return (await _get(f"{http}/readyz"))[1]["status"] == "draining"

            await poll(full, 10)  # --max-calls 1: the one call fills the instance
            busy = await _invite_status(sip_port)
            assert busy.startswith("SIP/2.0 503") and "\r\nRetry-After: 9\r\n" in busy, busy
            proc.send_signal(signal.SIGTERM)
            await poll(draining, 5)
            # A draining pod is still scraped, on the internal port and without a token.
            async with ClientSession(timeout=ClientTimeout(total=5)) as s, s.get(f"{internal}/metrics") as r:
                assert r.status == 200 and "\nvoicenav_draining 1.0\n" in await r.text()
            refused = await _invite_status(sip_port)
            assert refused.startswith("SIP/2.0 503"), refused
            assert "\r\nRetry-After: 9\r\n" in refused, refused
            offer = {"sdp": "v=0\r\n", "type": "offer"}
            async with ClientSession(timeout=ClientTimeout(total=5)) as s:
                async with s.get(f"{http}/webrtc/token") as r:
                    token = (await r.json())["token"]
                async with s.post(f"{http}/webrtc/offer", json=offer, headers={"X-Offer-Token": token}) as r:
                    assert r.status == 503 and r.headers.get("Retry-After") == "9"
            rc, out = await call
            assert rc == 0, out  # the call in progress went on to its end: routed, BYE from the IVR
            assert await asyncio.wait_for(proc.wait(), 30) == 0, log_path.read_text()
            keys = [k async for k in client.scan_iter(match=f"{prefix}dialog:record:*")]
            records = [json.loads(await client.get(k)) for k in keys]
            mine = [r for r in records if r["caller"] == mask_caller(caller)]
            assert mine and mine[0]["outcome"] == {"route": manifest()["dev031"]["intent"]}, records
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
