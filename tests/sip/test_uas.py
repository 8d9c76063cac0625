"""The UAS core and its transactions over UDP, driven by a raw socket with a shrunk T1."""

from __future__ import annotations

import asyncio
import time

import pytest

from ivr.sip import IncomingCall, SipTimers
from ivr.sip.message import SipResponse
from ivr.sip.server import SIP_REJECTED_CALLS
from tests.sip.helpers import SDP, Dialer, UdpClient, answer_and_wait, respond, running_server


async def count_until(client: UdpClient, status: int, duration: float) -> int:
    n, deadline = 0, time.monotonic() + duration
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await client.recv(left)
        except TimeoutError:
            break
        n += isinstance(msg, SipResponse) and msg.status == status
    return n


async def test_call_flow_and_caller_bye(udp_client: UdpClient, rtp_port: int) -> None:
    reasons: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        reasons.append(await answer_and_wait(call, rtp_port))

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        d.invite()
        assert (await udp_client.response(100)).to.tag is None
        ringing = await udp_client.response(180)
        ok = await udp_client.response(200)
        assert ringing.to.tag and ok.to.tag == ringing.to.tag
        assert ok.headers.get("Contact") == f"<sip:127.0.0.1:{server.bound_port}>"
        assert f"m=audio {rtp_port} RTP/AVP 8 96" in ok.body.decode()
        via = ok.top_via
        assert via.params["rport"] == str(udp_client.port) and via.params["received"] == "127.0.0.1"
        d.to_tag = ok.to.tag or ""
        d.ack()
        bye = d.request("BYE")
        bye_ok = await udp_client.response(200)
        assert bye_ok.cseq == (2, "BYE")
        await asyncio.sleep(0.05)
        assert reasons == ["bye"] and server.active_calls == 0
        # a retransmitted BYE gets the same answer from its transaction; a new one finds no dialog
        udp_client.send(bye, server.bound_port)
        assert (await udp_client.response()).status == 200
        d.request("BYE")
        assert (await udp_client.response()).status == 481


async def test_2xx_retransmitted_until_ack(udp_client: UdpClient, rtp_port: int) -> None:
    timers = SipTimers(t1=0.05, t2=0.2, t4=0.1)

    async def on_call(call: IncomingCall) -> None:
        await answer_and_wait(call, rtp_port)

    async with running_server(on_call, timers=timers) as server:
        d = Dialer(udp_client, server.bound_port)
        d.invite()
        first = await udp_client.response(200)
        # retransmissions at T1, 2T1, 4T1 (=T2), T2... : 0.05, 0.15, 0.35, 0.55 s after the first
        n = await count_until(udp_client, 200, 0.6)
        assert 3 <= n <= 5
        d.to_tag = first.to.tag or ""
        d.ack()
        await asyncio.sleep(0.01)
        while not udp_client.queue.empty():
            udp_client.queue.get_nowait()
        assert await count_until(udp_client, 200, 0.5) == 0
        assert server.active_calls == 1
        d.request("BYE")
        await udp_client.response(200)


async def test_no_ack_ends_call_with_bye(udp_client: UdpClient, rtp_port: int) -> None:
    timers = SipTimers(t1=0.02, t2=0.1, t4=0.05)  # 64*T1 = 1.28 s
    errors: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        try:
            await call.answer("127.0.0.1", rtp_port)
        except Exception as exc:
            errors.append(getattr(exc, "reason", repr(exc)))
        await call.wait_ended()

    async with running_server(on_call, timers=timers) as server:
        d = Dialer(udp_client, server.bound_port)
        t0 = time.monotonic()
        d.invite()
        bye = await udp_client.request("BYE", within=3)
        elapsed = time.monotonic() - t0
        assert 1.2 < elapsed < 2.5
        assert bye.to.tag == d.tag and bye.uri == f"sip:bob@127.0.0.1:{udp_client.port}"
        respond(udp_client, bye, 200, "OK", server.bound_port)
        await asyncio.sleep(0.05)
        assert errors == ["ack-timeout"] and server.active_calls == 0


async def test_invite_retransmission_absorbed(udp_client: UdpClient, rtp_port: int) -> None:
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        call.ringing()
        await call.wait_ended()

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        msg = d.invite()
        await udp_client.response(180)
        udp_client.send(msg, server.bound_port)  # same branch: a retransmission
        assert (await udp_client.response(180)).status == 180
        await asyncio.sleep(0.05)
        assert len(calls) == 1
        d.request("CANCEL", branch=d.invite_branch, cseq=1)
        r1, r2 = await udp_client.response(), await udp_client.response()
        assert sorted((r.status, r.cseq[1]) for r in (r1, r2)) == [(200, "CANCEL"), (487, "INVITE")]


async def test_non_2xx_retransmitted_until_ack(udp_client: UdpClient) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise AssertionError("no call expected")

    async with running_server(on_call, timers=SipTimers(t1=0.05, t2=0.2, t4=0.1)) as server:
        before = SIP_REJECTED_CALLS.labels("no-common-codec")._value.get()
        d = Dialer(udp_client, server.bound_port)
        g729 = SDP.format(port=4000, extra="").replace("RTP/AVP 8 0 96", "RTP/AVP 18")
        d.invite(g729)
        first = await udp_client.response(488)
        assert first.headers.get("Warning", "").startswith("305 127.0.0.1 ")
        assert await count_until(udp_client, 488, 0.4) >= 2  # timer G
        d.to_tag = first.to.tag or ""
        d.request("ACK", cseq=1, branch=d.invite_branch)
        await asyncio.sleep(0.02)
        while not udp_client.queue.empty():
            udp_client.queue.get_nowait()
        assert await count_until(udp_client, 488, 0.4) == 0
        assert SIP_REJECTED_CALLS.labels("no-common-codec")._value.get() == before + 1


@pytest.mark.parametrize(
    "kind, status",
    [
        ("bad-sdp", 400),
        ("text-body", 415),
        ("require", 420),
        ("mf0", 483),
        ("tel", 416),
        ("gzip", 415),
        ("bad-record-route", 400),
        ("no-contact", 400),
    ],
)
async def test_bad_invites(udp_client: UdpClient, kind: str, status: int) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise AssertionError("no call expected")

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        if kind == "bad-sdp":
            d.invite(sdp="v=0\r\nnonsense\r\n")
        elif kind == "text-body":
            d.invite(content_type="text/plain")
        elif kind == "require":
            d.invite(extra="Require: 100rel\r\n")
        elif kind == "gzip":
            d.invite(extra="Content-Encoding: gzip\r\n")
        elif kind == "bad-record-route":
            d.invite(extra="Record-Route: <sip:proxy.example.com;lr\r\n")
        elif kind == "no-contact":
            d.invite(mutate=lambda m: m.replace(f"Contact: <sip:bob@127.0.0.1:{udp_client.port}>\r\n", ""))
        elif kind == "mf0":
            d.invite(mutate=lambda m: m.replace("Max-Forwards: 70", "Max-Forwards: 0"))
        else:
            sip_ruri = f"INVITE sip:ivr@127.0.0.1:{server.bound_port}"
            d.invite(mutate=lambda m: m.replace(sip_ruri, "INVITE tel:+1555"))
        resp = await udp_client.response()
        assert resp.status == status
        assert resp.cseq == (1, "INVITE")
        if status == 420:
            assert resp.headers.get("Unsupported") == "100rel"
        if kind == "text-body":
            assert resp.headers.get("Accept") == "application/sdp"
        assert server.active_calls == 0


async def test_response_addressing_via_sent_by_and_rport(udp_client: UdpClient) -> None:
    """§18.2.2: without rport the response goes to the Via sent-by port; with rport (RFC 3581) to the
    source port of the request."""
    other = await UdpClient.open()

    async def on_call(call: IncomingCall) -> None:
        call.reject(486)

    try:
        async with running_server(on_call) as server:
            d = Dialer(udp_client, server.bound_port)
            d.invite(via_port=other.port, mutate=lambda m: m.replace(";rport", ""))
            busy = await other.response()
            assert busy.status == 486 and "received" not in busy.top_via.params
            assert udp_client.queue.empty()
            d2 = Dialer(udp_client, server.bound_port)
            d2.invite(via_port=other.port)
            busy = await udp_client.response()
            assert busy.status == 486 and busy.top_via.params["rport"] == str(udp_client.port)
    finally:
        other.close()


async def test_rfc2543_peer_without_branch(udp_client: UdpClient) -> None:
    """No magic-cookie branch: transactions are matched on Call-ID, From tag, CSeq and top Via."""
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        call.ringing()
        await call.wait_ended()

    async with running_server(on_call, timers=SipTimers(t1=0.05, t2=0.2, t4=0.1)) as server:
        d = Dialer(udp_client, server.bound_port)
        invite = d.invite(mutate=lambda m: m.replace(f";branch={d.invite_branch}", ""))
        await udp_client.response(180)
        udp_client.send(invite, server.bound_port)  # retransmission: absorbed, 180 repeated
        await udp_client.response(180)
        head = invite.split("Content-Type")[0]
        cancel = (
            head.replace("INVITE sip:", "CANCEL sip:", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
            + "Content-Length: 0\r\n\r\n"
        )
        udp_client.send(cancel, server.bound_port)
        responses = {r.status: r for r in [await udp_client.response(), await udp_client.response()]}
        assert set(responses) == {200, 487}
        to_487 = responses[487].headers.get("To") or ""
        ack = (
            cancel.replace("CANCEL sip:", "ACK sip:", 1)
            .replace("CSeq: 1 CANCEL", "CSeq: 1 ACK")
            .replace(f"To: <sip:ivr@127.0.0.1:{server.bound_port}>", f"To: {to_487}")
        )
        udp_client.send(ack, server.bound_port)
        await asyncio.sleep(0.02)
        while not udp_client.queue.empty():
            udp_client.queue.get_nowait()
        assert await count_until(udp_client, 487, 0.4) == 0  # the ACK matched: no more 487s
        assert len(calls) == 1 and calls[0].end_reason == "cancel"
