"""A dialog store outage fails the call gracefully: the caller hears an apology and the IVR hangs up;
the failure is counted, and the process keeps serving."""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

import pytest
from callers import running_service, sipp_call, sipp_scenario, ulaw_file

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,  # the test server's clean-up still talks to the real one
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]


def _closed_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


async def test_store_outage_apologizes_and_hangs_up(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{_closed_tcp_port()}/0"
    async with running_service(dialog={"redis_url": dead_redis}, hotwords={"redis_url": dead_redis}) as server:
        failures = await server.metric("voicenav_call_failures_total", cause="store")
        errors = await server.metric("voicenav_calls_total", outcome="error")
        for _ in range(2):  # the first failure leaves the service able to take (and fail) the next call
            caller = f"outage-{uuid.uuid4().hex[:8]}"
            audio = ulaw_file("dev031", tmp_path)
            scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{audio},1,0"/>', timeout_ms=20000)
            rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=30)
            assert rc == 0, out  # answered, then the IVR's BYE after the apology
        assert await server.metric("voicenav_call_failures_total", cause="store") == failures + 2
        assert await server.metric("voicenav_calls_total", outcome="error") == errors + 2
        status, _ = await server.get("/v1/calls?limit=5")
        assert status == 503
        assert server.service.active_calls == 0
