"""sipp (a real SIP UAC) against the server: call, CANCEL, OPTIONS, 488, our BYE, REFER."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from ivr.sip import IncomingCall, SipServer
from tests.ports import free_ports
from tests.sip.helpers import running_server

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed")]

SCENARIOS = Path(__file__).parent / "scenarios"


async def run_sipp(
    server: SipServer, scenario: str, tmp_path: Path, limit: float = 8.0, transport: str = "u1"
) -> tuple[int, str]:
    err = tmp_path / "sipp_err.log"
    cmd = [
        "sipp",
        f"127.0.0.1:{server.bound_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-m",
        "1",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_ports()),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_ports(4)),
        "-nostdin",
        "-timeout",
        f"{int(limit)}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(err),
        "-max_recv_loops",
        "1000",
        "-t",
        transport,
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit + 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log = out.decode(errors="replace")
    if err.exists():
        log += "\n--- error file ---\n" + err.read_text(errors="replace")
    return proc.returncode or 0, log


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_call_with_caller_bye(tmp_path: Path, rtp_port: int, transport: str) -> None:
    seen: list[IncomingCall] = []
    reasons: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        seen.append(call)
        call.ringing()
        await call.answer("127.0.0.1", rtp_port)
        reasons.append(await call.wait_ended())

    async with running_server(on_call) as server:
        t0 = time.monotonic()
        rc, log = await run_sipp(server, "uac_call.xml", tmp_path, transport=transport)
        assert rc == 0, log
        assert time.monotonic() - t0 < 5
        await asyncio.sleep(0.05)
        assert server.active_calls == 0
    call = seen[0]
    assert reasons == ["bye"]
    assert call.peer.transport == ("tcp" if transport == "t1" else "udp")
    assert call.caller_display == "Alice Caller" and call.caller_user == "alice"
    assert call.media.codec == "PCMU" and call.media.payload_type == 0
    assert call.media.telephone_event_pt == 101 and call.media.ptime == 20
    assert call.media.remote_ip == "127.0.0.1" and call.media.remote_port > 0


async def test_cancel_gets_487(tmp_path: Path) -> None:
    reasons: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        call.ringing()
        reasons.append(await call.wait_ended())

    async with running_server(on_call) as server:
        rc, log = await run_sipp(server, "uac_cancel.xml", tmp_path)
        assert rc == 0, log
    assert reasons == ["cancel"]


async def test_options(tmp_path: Path) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise AssertionError("OPTIONS must not create a call")

    async with running_server(on_call) as server:
        rc, log = await run_sipp(server, "uac_options.xml", tmp_path)
        assert rc == 0, log
        assert server.active_calls == 0


async def test_g729_only_gets_488(tmp_path: Path) -> None:
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)

    async with running_server(on_call) as server:
        rc, log = await run_sipp(server, "uac_g729.xml", tmp_path)
        assert rc == 0, log
    assert calls == []


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_server_hangs_up(tmp_path: Path, rtp_port: int, transport: str) -> None:
    reasons: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        await asyncio.sleep(0.2)
        await call.hangup("goodbye")
        reasons.append(call.end_reason or "")

    async with running_server(on_call) as server:
        rc, log = await run_sipp(server, "uac_server_bye.xml", tmp_path, transport=transport)
        assert rc == 0, log
    assert reasons == ["goodbye"]


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_refer_transfer(tmp_path: Path, rtp_port: int, transport: str) -> None:
    results: list[bool] = []
    reasons: list[str | None] = []

    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        results.append(await call.transfer("sip:agent@127.0.0.1:5999"))
        reasons.append(call.end_reason)

    async with running_server(on_call) as server:
        rc, log = await run_sipp(server, "uac_refer.xml", tmp_path, transport=transport)
        assert rc == 0, log
    assert results == [True]
    assert reasons == ["transferred"]
