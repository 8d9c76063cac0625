"""SIP admission on real sockets: a stranger's flood is dropped while an allowed caller gets through,
INVITE rate per source, un-ACKed calls free their slots, TCP connection cap and timeouts, and
digest authentication with our own client and with sipp."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from ivr.calls.ratelimit import BucketParams
from ivr.sip import IncomingCall, SipTimers
from ivr.sip.access import SipAccessParams
from ivr.sip.digest import DigestParams, parse_authorization
from ivr.sip.transport import TcpLimits
from tests.ports import free_ports
from tests.sip.helpers import Dialer, UdpClient, running_server

STRANGER = "127.0.0.2"  # any 127/8 address is loopback on Linux; only 127.0.0.1 is allowed below
ONLY_LOCALHOST = ("127.0.0.1/32",)
SCENARIOS = Path(__file__).parent / "scenarios"


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("voicenav_sip_admission_refused_total", {"reason": reason}) or 0.0


async def udp_client(host: str) -> UdpClient:
    loop = asyncio.get_running_loop()
    proto = UdpClient()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=(host, 0))
    proto.transport = transport
    proto.port = transport.get_extra_info("sockname")[1]
    return proto


async def flood(client: UdpClient, port: int, count: int = 200) -> None:
    """`count` new INVITEs in about a second (paced, so the kernel's socket buffer does not drop them)."""
    for i in range(count):
        Dialer(client, port).invite()
        if i % 20 == 19:
            await asyncio.sleep(0.1)


def answering(rtp_port: int = 4000):
    async def on_call(call: IncomingCall) -> None:
        call.ringing()
        await call.answer("127.0.0.1", rtp_port)
        await call.wait_ended()

    return on_call


async def test_stranger_flood_is_dropped_while_an_allowed_caller_is_answered() -> None:
    admission = SipAccessParams(allow_sources=ONLY_LOCALHOST)
    async with running_server(answering(), access=admission, max_calls=32) as server:
        stranger, caller = await udp_client(STRANGER), await udp_client("127.0.0.1")
        try:
            before = refused("source")
            flooding = asyncio.create_task(flood(stranger, server.bound_port))
            await asyncio.sleep(0.3)
            ok = await Dialer(caller, server.bound_port).establish()
            assert ok.status == 200 and not flooding.done()
            await flooding
            await asyncio.sleep(0.3)
            assert stranger.queue.empty()  # not even a 100 Trying: nothing reflected, nothing learned
            assert server.active_calls == 1
            assert refused("source") - before == 200
        finally:
            stranger.close()
            caller.close()


async def test_invite_rate_per_source_answers_503_with_retry_after() -> None:
    admission = SipAccessParams(invite_rate=BucketParams(rate_per_s=0.1, burst=5), retry_after_s=3)
    async with running_server(answering(), access=admission) as server:
        client = await udp_client("127.0.0.1")
        try:
            before = refused("rate-limited")
            for _ in range(8):
                Dialer(client, server.bound_port).invite()
            finals = [await client.response() for _ in range(8)]
            assert sorted(r.status for r in finals) == [200] * 5 + [503] * 3
            assert {r.headers.get("Retry-After") for r in finals if r.status == 503} == {"10"}  # 1 token at 0.1/s
            assert refused("rate-limited") - before == 3
        finally:
            client.close()


async def test_unacked_flood_does_not_hold_slots_beyond_the_ack_timer() -> None:
    # RFC timers (64*T1 = 32 s): without the admission's ACK timer the flood would hold every slot 32 s
    admission = SipAccessParams(ack_timeout_s=1.0, invite_rate=BucketParams(rate_per_s=50, burst=200))
    async with running_server(answering(), access=admission, max_calls=32, timers=SipTimers()) as server:
        assert server.ack_timeout == 1.0
        flooder, caller = await udp_client("127.0.0.1"), await udp_client("127.0.0.1")
        try:
            await flood(flooder, server.bound_port, 40)
            assert server.active_calls == 32
            Dialer(caller, server.bound_port).invite()
            assert (await caller.response()).status == 503  # full
            await asyncio.sleep(1.2)  # the first of them were answered ~1 s before the timer's 1.0 s ran out
            assert server.active_calls == 0
            assert (await Dialer(caller, server.bound_port).establish()).status == 200
        finally:
            flooder.close()
            caller.close()


async def _closed_within(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_tcp_connections_are_capped_and_idle_or_slow_ones_closed() -> None:
    tcp = TcpLimits(max_connections=5, idle_timeout_s=1.0, message_timeout_s=0.6)
    admission = SipAccessParams(allow_sources=ONLY_LOCALHOST)
    async with running_server(answering(), access=admission, transports=("tcp",), tcp=tcp) as server:
        port = server.bound_port
        stranger = await asyncio.open_connection("127.0.0.1", port, local_addr=(STRANGER, 0))
        assert await _closed_within(stranger[0], 0.3)

        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
        closed_at_once = await asyncio.gather(*(_closed_within(r, 0.3) for r, _ in conns))
        assert closed_at_once == [False] * 5 + [True] * 3
        # a peer trickling a message byte by byte, faster than the idle timeout, still loses it
        reader, writer = conns[0]
        head = b"INVITE sip:ivr@127.0.0.1 SIP/2.0\r\n"
        trickled = 0
        while not reader.at_eof() and trickled < len(head):
            writer.write(head[trickled : trickled + 1])
            trickled += 1
            if await _closed_within(reader, 0.1):
                break
        assert trickled < 12  # closed after ~0.6 s of 0.1 s steps
        assert all(await asyncio.gather(*(_closed_within(r, 1.0) for r, _ in conns[1:5])))  # idle after 1 s
        for _, w in [stranger, *conns]:
            w.close()
        fresh = await asyncio.open_connection("127.0.0.1", port)  # slots came back
        assert not await _closed_within(fresh[0], 0.2)
        fresh[1].close()


def _digest(params: dict[str, str], method: str, uri: str, user: str, password: str, realm: str) -> str:
    h = hashlib.sha256 if params["algorithm"] == "SHA-256" else hashlib.md5

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hx(f"{user}:{realm}:{password}"), hx(f"{method}:{uri}")
    response = hx(f"{ha1}:{params['nonce']}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={params["algorithm"]}, qop=auth, nc=00000001, cnonce="c0ffee"'
    )


async def test_digest_challenge_and_response_sha256() -> None:
    digest = DigestParams(realm="ivr.example", users={"gw1": "s3cret"})
    async with running_server(answering(), access=SipAccessParams(digest=digest)) as server:
        client = await udp_client("127.0.0.1")
        try:
            dialer = Dialer(client, server.bound_port)
            dialer.invite()
            challenge = await client.response()
            assert challenge.status == 401 and server.active_calls == 0
            offers = [parse_authorization(v) for v in challenge.headers.raw("WWW-Authenticate")]
            assert [p["algorithm"] for _, p in offers] == ["SHA-256", "MD5"]
            sha = offers[0][1]
            uri = f"sip:ivr@127.0.0.1:{server.bound_port}"

            wrong = _digest(sha, "INVITE", uri, "gw1", "guess", "ivr.example")
            dialer.cseq += 1
            dialer.invite(extra=f"Authorization: {wrong}\r\n")
            assert (await client.response()).status == 401

            right = _digest(sha, "INVITE", uri, "gw1", "s3cret", "ivr.example")
            dialer.cseq += 1
            dialer.invite(extra=f"Authorization: {right}\r\n")
            assert (await client.response()).status == 200 and server.active_calls == 1

            replay = Dialer(client, server.bound_port)  # the same credentials on a new call
            replay.invite(extra=f"Authorization: {right}\r\n")
            again = await client.response()
            assert again.status == 401 and "stale=true" in again.headers.raw("WWW-Authenticate")[0]
            assert server.active_calls == 1
        finally:
            client.close()


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed")
async def test_digest_with_sipp(tmp_path: Path) -> None:
    digest = DigestParams(realm="ivr.example", users={"gw1": "s3cret"}, algorithms=("MD5",))
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        await answering()(call)

    async with running_server(on_call, access=SipAccessParams(digest=digest)) as server:
        for password, expect_rc in (("s3cret", 0), ("wrong-" + secrets.token_hex(2), 1)):
            cmd = [
                "sipp", f"127.0.0.1:{server.bound_port}", "-sf", str(SCENARIOS / "uac_digest.xml"),
                "-m", "1", "-i", "127.0.0.1", "-p", str(free_ports()), "-mi", "127.0.0.1",
                "-mp", str(free_ports(4)), "-au", "gw1", "-ap", password, "-nostdin",
                "-timeout", "6s", "-timeout_error", "-max_recv_loops", "1000", "-t", "u1",
            ]  # fmt: skip
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 15)
            assert (proc.returncode != 0) == bool(expect_rc), out.decode(errors="replace")[-3000:]
    assert len(calls) == 1 and calls[0].end_reason == "bye"
