"""In-dialog behaviour: re-INVITE, INFO, route sets, REFER outcomes, capacity/drain, robustness, TCP."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import pytest

from ivr.calls.admission import ACTIVE_CALLS
from ivr.media.events import DtmfDigit
from ivr.sip import CallEnded, IncomingCall, SipServer, SipTimers
from ivr.sip.message import SipResponse, parse_message
from ivr.sip.sdp import MediaOffer
from ivr.sip.server import SIP_PARSE_ERRORS, SIP_REQUESTS, SIP_RESPONSES
from tests.sip.helpers import SDP, Dialer, UdpClient, answer_and_wait, respond, running_server


def sdp(port: int, extra: str = "", conn: str = "127.0.0.1") -> str:
    return SDP.format(port=port, extra=extra).replace("c=IN IP4 127.0.0.1", f"c=IN IP4 {conn}")


def ack_with_answer(d: Dialer, port: int, cseq: int) -> None:
    """The ACK of an offerless INVITE, carrying our answer: PCMA and telephone-event at 101."""
    answer = sdp(port).replace("RTP/AVP 8 0 96", "RTP/AVP 8 101").replace("96", "101")
    d.request("ACK", cseq=cseq, body=answer, extra="Content-Type: application/sdp\r\n")


class Answering(NamedTuple):
    server: SipServer
    calls: list[IncomingCall]  # as they arrive
    reasons: list[str]  # why each call ended, as they end


@asynccontextmanager
async def answering(rtp_port: int) -> AsyncIterator[Answering]:
    """A server that answers every call and keeps it up until it ends."""
    calls: list[IncomingCall] = []
    reasons: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        reasons.append(await answer_and_wait(call, rtp_port))

    async with running_server(on_call) as server:
        yield Answering(server, calls, reasons)


class Answered(NamedTuple):
    server: SipServer
    dialer: Dialer
    ok: SipResponse  # the 200 OK of the INVITE
    call: IncomingCall  # the call as the server's handler sees it


@asynccontextmanager
async def answered_call(udp_client: UdpClient, rtp_port: int) -> AsyncIterator[Answered]:
    """`answering`, and one call established to it."""
    async with answering(rtp_port) as (server, calls, _):
        d = Dialer(udp_client, server.bound_port)
        ok = await d.establish()
        yield Answered(server, d, ok, calls[0])


async def test_garbage_between_two_good_calls(udp_client: UdpClient, rtp_port: int) -> None:
    async with answering(rtp_port) as (server, _, reasons):
        before = SIP_PARSE_ERRORS.labels("udp")._value.get()
        for _ in range(2):
            d = Dialer(udp_client, server.bound_port)
            await d.establish()
            rng = random.Random(7)
            junk = [rng.randbytes(rng.randint(1, 400)) for _ in range(40)]
            junk += [
                b"INVITE sip:x SIP/2.0\r\nVia: broken\r\n\r\n",
                b"SIP/2.0 200\r\n\r\n",
                b"\x00" * 2000,
                b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99\r\n\r\nshort",
                b"X" * 60000,
            ]
            for j in junk:
                udp_client.send(j, server.bound_port)
            d.request("BYE")
            assert (await udp_client.response(200)).cseq[1] == "BYE"
        await asyncio.sleep(0.05)
        assert reasons == ["bye", "bye"]
        assert SIP_PARSE_ERRORS.labels("udp")._value.get() >= before + 80


async def test_reinvite_updates_media_and_hold(udp_client: UdpClient, rtp_port: int) -> None:
    changes: list[MediaOffer] = []
    async with answered_call(udp_client, rtp_port) as (server, d, ok, call):
        call.on_media_change = changes.append
        version = int(ok.body.decode().split("o=voicenav ")[1].split()[1])
        d.cseq += 1
        d.invite(sdp(4100, "a=sendonly\r\n"), extra="")
        re_ok = await udp_client.response(200)
        assert re_ok.cseq == (2, "INVITE")
        body = re_ok.body.decode()
        assert int(body.split("o=voicenav ")[1].split()[1]) == version + 1
        assert "a=recvonly" in body and f"m=audio {rtp_port} RTP/AVP 8 96" in body
        d.ack(cseq=2)
        d.cseq += 1
        d.invite(sdp(4200, conn="127.0.0.2"))
        await udp_client.response(200)
        d.ack(cseq=3)
        d.cseq += 1
        # unusable re-offer: 488, the call and its media stay as they were
        d.invite(sdp(4300).replace("RTP/AVP 8 0 96", "RTP/AVP 18"))
        assert (await udp_client.response()).status == 488
        d.request("ACK", cseq=4, branch=d.invite_branch)
        await asyncio.sleep(0.05)
        assert [(c.remote_ip, c.remote_port, c.on_hold) for c in changes] == [
            ("127.0.0.1", 4100, True),
            ("127.0.0.2", 4200, False),
        ]
        assert server.active_calls == 1
        d.request("BYE")
        await udp_client.response(200)


async def test_offerless_reinvite_gets_offer_and_answer_in_ack(udp_client: UdpClient, rtp_port: int) -> None:
    changes: list[MediaOffer] = []
    async with answered_call(udp_client, rtp_port) as (_, d, _, call):
        call.on_media_change = changes.append
        d.cseq += 1
        d.invite(sdp="")
        offer = await udp_client.response(200)
        assert f"m=audio {rtp_port} RTP/AVP 0 8 101" in offer.body.decode()
        ack_with_answer(d, 4500, cseq=2)
        await asyncio.sleep(0.05)
        assert [(c.remote_port, c.codec, c.telephone_event_pt) for c in changes] == [(4500, "PCMA", 101)]
        d.request("BYE")
        await udp_client.response(200)


async def test_delayed_offer_invite(udp_client: UdpClient, rtp_port: int) -> None:
    media: list[MediaOffer | None] = []

    async def on_call(call: IncomingCall) -> None:
        assert call.media is None
        await call.answer("127.0.0.1", rtp_port)
        media.append(call.media)
        await call.wait_ended()

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        d.invite(sdp="")
        ok = await udp_client.response(200)
        offer = ok.body.decode()
        assert f"m=audio {rtp_port} RTP/AVP 0 8 101" in offer and "a=fmtp:101 0-15" in offer
        d.to_tag = ok.to.tag or ""
        ack_with_answer(d, 4600, cseq=1)
        await asyncio.sleep(0.05)
        assert media and media[0] is not None
        assert (media[0].codec, media[0].remote_port, media[0].telephone_event_pt) == ("PCMA", 4600, 101)
        d.request("BYE")
        await udp_client.response(200)


async def test_delayed_offer_without_answer_in_ack_is_released(udp_client: UdpClient, rtp_port: int) -> None:
    errors: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        try:
            await call.answer("127.0.0.1", rtp_port)
        except CallEnded as exc:
            errors.append(exc.reason)

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        d.invite(sdp="")
        ok = await udp_client.response(200)
        d.to_tag = ok.to.tag or ""
        d.ack()
        bye = await udp_client.request("BYE")
        respond(udp_client, bye, 200, "OK", server.bound_port)
        await asyncio.sleep(0.02)
        assert errors == ["bad-sdp"]


async def test_info_dtmf_relay(udp_client: UdpClient, rtp_port: int) -> None:
    digits: list[DtmfDigit] = []
    async with answered_call(udp_client, rtp_port) as (_, d, _, call):
        call.on_dtmf = digits.append
        for sig in ("5", "11"):
            d.request(
                "INFO", extra="Content-Type: application/dtmf-relay\r\n", body=f"Signal={sig}\r\nDuration=160\r\n"
            )
            assert (await udp_client.response()).status == 200
        d.request("INFO", extra="Content-Type: application/dtmf-relay\r\n", body="Signal=Z\r\n")
        assert (await udp_client.response()).status == 400
        d.request("INFO", extra="Content-Type: text/plain\r\n", body="hello")
        assert (await udp_client.response()).status == 415
        assert [x.digit for x in digits] == ["5", "#"] and digits[0].source == "sip-info"
        d.request("BYE")
        await udp_client.response(200)


async def test_record_route_becomes_route_set(udp_client: UdpClient, rtp_port: int) -> None:
    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        await call.hangup(cause='Q.850;cause=16;text="Normal call clearing"')

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        rr = f"Record-Route: <sip:127.0.0.1:{udp_client.port};lr>, <sip:p2.invalid;lr;ftag=x>\r\n"
        d.invite(extra=rr)
        ok = await udp_client.response(200)
        assert ok.headers.values("Record-Route") == [
            f"<sip:127.0.0.1:{udp_client.port};lr>",
            "<sip:p2.invalid;lr;ftag=x>",
        ]
        d.to_tag = ok.to.tag or ""
        d.ack()
        bye = await udp_client.request("BYE")  # sent to the first route, our "proxy"
        assert bye.uri == f"sip:bob@127.0.0.1:{udp_client.port}"
        assert bye.headers.values("Route") == [f"<sip:127.0.0.1:{udp_client.port};lr>", "<sip:p2.invalid;lr;ftag=x>"]
        assert bye.headers.get("Max-Forwards") == "70" and bye.top_via.branch.startswith("z9hG4bK")
        assert bye.from_.tag == d.to_tag and bye.to.tag == d.tag
        assert bye.headers.get("Reason") == 'Q.850;cause=16;text="Normal call clearing"'
        respond(udp_client, bye, 200, "OK", server.bound_port)


async def test_capacity_and_drain(udp_client: UdpClient, rtp_port: int) -> None:
    release = asyncio.Event()

    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        await release.wait()
        await call.hangup()

    async with running_server(on_call, max_calls=1, retry_after=7) as server:
        first = Dialer(udp_client, server.bound_port)
        await first.establish()
        second = Dialer(udp_client, server.bound_port)
        second.invite()
        busy = await udp_client.response()
        assert busy.status == 503 and busy.headers.get("Retry-After") == "7"
        drained = asyncio.ensure_future(server.drain())
        await asyncio.sleep(0.05)
        assert not drained.done()
        release.set()
        bye = await udp_client.request("BYE")
        respond(udp_client, bye, 200, "OK", server.bound_port)
        await asyncio.wait_for(drained, 2)
        third = Dialer(udp_client, server.bound_port)
        third.invite()
        assert (await udp_client.response()).status == 503  # draining: still refusing


async def test_out_of_dialog_and_odd_requests(udp_client: UdpClient, rtp_port: int) -> None:
    async with answering(rtp_port) as (server, _, reasons):
        d = Dialer(udp_client, server.bound_port)
        d.request("OPTIONS")
        opt = await udp_client.response()
        assert opt.status == 200 and "INVITE" in (opt.headers.get("Allow") or "")
        d.request("FOO")
        assert (await udp_client.response()).status == 501
        d.request("SUBSCRIBE")
        assert (await udp_client.response()).status == 405
        d.request("CANCEL", cseq=1)
        assert (await udp_client.response()).status == 481
        d.to_tag = "nosuchdialog"
        d.request("BYE")
        assert (await udp_client.response()).status == 481
        d.to_tag = ""
        d.cseq = 10
        await d.establish()
        d.request("INFO", cseq=5)  # lower than the INVITE's CSeq 11
        assert (await udp_client.response()).status == 500
        d.request("BYE")
        assert (await udp_client.response()).status == 200
        await asyncio.sleep(0.02)
    assert reasons == ["bye"]


async def test_handler_error_gives_500(udp_client: UdpClient) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise RuntimeError("application bug")

    async with running_server(on_call) as server:
        Dialer(udp_client, server.bound_port).invite()
        assert (await udp_client.response()).status == 500
        await asyncio.sleep(0.02)
        assert server.active_calls == 0


async def transfer_scenario(
    udp_client: UdpClient, rtp_port: int, peer_reply: str, **options: object
) -> tuple[bool, IncomingCall, UdpClient]:
    results: list[tuple[bool, IncomingCall]] = []

    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        results.append((await call.transfer("sip:agent@127.0.0.1:5999"), call))
        if not call.ended:
            await call.hangup("after-transfer")

    async with running_server(on_call, **options) as server:
        d = Dialer(udp_client, server.bound_port)
        await d.establish()
        refer = await udp_client.request("REFER")
        assert refer.headers.get("Refer-To") == "<sip:agent@127.0.0.1:5999>"
        if peer_reply == "405":
            respond(udp_client, refer, 405, "Method Not Allowed", server.bound_port)
        elif peer_reply.startswith("notify"):
            respond(udp_client, refer, 202, "Accepted", server.bound_port)
            frag = peer_reply.split()[1]
            d.request(
                "NOTIFY",
                extra="Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n"
                "Content-Type: message/sipfrag\r\n",
                body=f"SIP/2.0 {frag} Whatever\r\n",
            )
            assert (await udp_client.response()).status == 200
        bye = await udp_client.request("BYE", within=3)
        respond(udp_client, bye, 200, "OK", server.bound_port)
        await asyncio.sleep(0.02)
    ok, call = results[0]
    return ok, call, udp_client


async def test_transfer_refused_keeps_call(udp_client: UdpClient, rtp_port: int) -> None:
    ok, call, _ = await transfer_scenario(udp_client, rtp_port, "405")
    assert not ok and call.end_reason == "after-transfer"
    assert call.transfer_failure == ("sip:agent@127.0.0.1:5999", "405 Method Not Allowed")


async def test_transfer_failed_sipfrag_with_hangup_fallback(udp_client: UdpClient, rtp_port: int) -> None:
    ok, call, _ = await transfer_scenario(udp_client, rtp_port, "notify 503", transfer_fallback="hangup")
    assert not ok and call.end_reason == "transfer-failed"


async def test_transfer_timeout(udp_client: UdpClient, rtp_port: int) -> None:
    ok, call, _ = await transfer_scenario(udp_client, rtp_port, "silence", transfer_timeout=0.3)
    assert not ok and call.transfer_failure is not None and call.transfer_failure[1] == "timeout"


async def test_transfer_bye_carries_reason(udp_client: UdpClient, rtp_port: int) -> None:
    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        await call.transfer("sip:agent@127.0.0.1:5999")

    async with running_server(on_call, transfer_fallback="hangup-with-reason") as server:
        d = Dialer(udp_client, server.bound_port)
        await d.establish()
        refer = await udp_client.request("REFER")
        respond(udp_client, refer, 603, "Decline", server.bound_port)
        bye = await udp_client.request("BYE")
        assert (bye.headers.get("Reason") or "").startswith('SIP;cause=480;text="transfer to sip:agent@')
        respond(udp_client, bye, 200, "OK", server.bound_port)


async def test_plain_hangup_fallback_has_no_reason(udp_client: UdpClient, rtp_port: int) -> None:
    ok, call, _ = await transfer_scenario(udp_client, rtp_port, "405", transfer_fallback="hangup")
    assert not ok and call.end_reason == "transfer-failed"
    assert call.transfer_failure == ("sip:agent@127.0.0.1:5999", "405 Method Not Allowed")


async def test_merged_invite_gets_482_and_metrics(udp_client: UdpClient, rtp_port: int) -> None:
    async def on_call(call: IncomingCall) -> None:
        call.ringing()
        await call.wait_ended()

    async with running_server(on_call) as server:
        sent_482 = SIP_RESPONSES.labels("482")._value.get()
        active = ACTIVE_CALLS.labels("sip")._value.get()
        d = Dialer(udp_client, server.bound_port)
        d.invite()
        await udp_client.response(180)
        assert ACTIVE_CALLS.labels("sip")._value.get() == active + 1
        d.invite()  # same Call-ID, From tag and CSeq, new branch: arrived along a second path
        assert (await udp_client.response()).status == 482
        assert SIP_RESPONSES.labels("482")._value.get() == sent_482 + 1
        assert server.active_calls == 1
    assert ACTIVE_CALLS.labels("sip")._value.get() == active  # stop() released the ringing call


async def test_stop_hangs_up_active_calls(udp_client: UdpClient, rtp_port: int) -> None:
    async with answering(rtp_port) as (server, _, reasons):
        d = Dialer(udp_client, server.bound_port)
        await d.establish()
        stopping = asyncio.ensure_future(server.stop())
        bye = await udp_client.request("BYE")
        respond(udp_client, bye, 200, "OK", server.bound_port)
        await asyncio.wait_for(stopping, 3)
    assert reasons == ["server-shutdown"]


async def tcp_exchange(reader: asyncio.StreamReader) -> SipResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    clen = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    msg = parse_message(head + await reader.readexactly(clen), datagram=False)
    assert isinstance(msg, SipResponse)
    return msg


async def test_tcp_call_and_broken_stream_isolated(rtp_port: int) -> None:
    async with answering(rtp_port) as (server, _, reasons):
        port = server.bound_port
        r, w = await asyncio.open_connection("127.0.0.1", port)
        local_port = w.get_extra_info("sockname")[1]
        client = UdpClient()
        client.port = local_port
        d = Dialer(client, port)
        sent: list[bytes] = []
        client.send = lambda data, _port: sent.append(data.encode() if isinstance(data, str) else data)  # type: ignore[method-assign]
        d.invite(mutate=lambda m: m.replace("SIP/2.0/UDP", "SIP/2.0/TCP"))
        w.write(sent.pop())
        statuses = []
        while not statuses or statuses[-1] < 200:
            resp = await asyncio.wait_for(tcp_exchange(r), 2)
            statuses.append(resp.status)
        assert statuses == [100, 180, 200]
        assert resp.headers.get("Contact") == f"<sip:127.0.0.1:{port};transport=tcp>"
        d.to_tag = resp.to.tag or ""
        # another connection breaks framing: it is closed, ours keeps working
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        w2.write(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")
        assert await asyncio.wait_for(r2.read(), 2) == b""
        w2.close()
        d.ack()
        d.request("BYE")
        for data in sent:
            w.write(data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        bye_ok = await asyncio.wait_for(tcp_exchange(r), 2)
        assert (bye_ok.status, bye_ok.cseq[1]) == (200, "BYE")
        w.close()
        await asyncio.sleep(0.05)
        assert reasons == ["bye"]


async def test_fuzzed_requests_never_break_the_core(
    udp_client: UdpClient, rtp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Mutated INVITE/re-INVITE/INFO/BYE requests reach the core (not just the parser): none may raise
    inside it, and a clean call still works afterwards."""
    answered: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        if call.from_uri.startswith("sip:bob@") and call.caller_display == "Good":
            answered.append(call)
            await answer_and_wait(call, rtp_port)
        else:
            call.reject(486)

    def core_requests() -> float:
        return sum(SIP_REQUESTS.labels(m)._value.get() for m in ("INVITE", "INFO", "BYE", "CANCEL", "other"))

    rng = random.Random(3261)
    async with running_server(on_call, timers=SipTimers(t1=0.01, t2=0.04, t4=0.02)) as server:
        d = Dialer(udp_client, server.bound_port)
        sent: list[str] = []
        d.c = type("Capture", (), {"port": udp_client.port, "send": lambda self, m, p: sent.append(m)})()
        d.invite()
        d.to_tag = "abc"
        d.invite(sdp(4100, "a=sendonly\r\n"))
        d.request("INFO", extra="Content-Type: application/dtmf-relay\r\n", body="Signal=5\r\n")
        d.request("BYE")
        d.request("CANCEL", cseq=1)
        before = core_requests()
        with caplog.at_level("ERROR", logger="ivr.sip"):
            for _ in range(400):
                b = bytearray(rng.choice(sent).encode())
                for _ in range(rng.randint(1, 2)):
                    i = rng.randrange(len(b))
                    if rng.random() < 0.5:
                        b[i] = rng.choice(b' :;,<>=@"\r\n0123456789abcdefINVITE\x00\xff')
                    else:
                        del b[i : i + rng.randint(1, 6)]
                udp_client.send(bytes(b), server.bound_port)
                await asyncio.sleep(0)  # let the server read: the socket buffer must not overflow
            await asyncio.sleep(0.3)
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
        reached = core_requests() - before
        assert reached > 120, reached  # many mutations got past the parser into the core
        while not udp_client.queue.empty():
            udp_client.queue.get_nowait()
        good = Dialer(udp_client, server.bound_port)
        good.invite(mutate=lambda m: m.replace('"Bob"', '"Good"'))
        ok = await udp_client.response(200)
        good.to_tag = ok.to.tag or ""
        good.ack()
        good.request("BYE")
        assert (await udp_client.response(200)).cseq[1] == "BYE"
        assert len(answered) == 1


async def test_bye_to_a_contact_hostname(udp_client: UdpClient, rtp_port: int) -> None:
    """A Contact with a host name is resolved without blocking, to an address our socket can reach."""

    async def on_call(call: IncomingCall) -> None:
        await call.answer("127.0.0.1", rtp_port)
        await call.hangup()

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        d.invite(
            mutate=lambda m: m.replace(
                f"Contact: <sip:bob@127.0.0.1:{udp_client.port}>", f"Contact: <sip:bob@localhost:{udp_client.port}>"
            )
        )
        ok = await udp_client.response(200)
        d.to_tag = ok.to.tag or ""
        d.ack()
        bye = await udp_client.request("BYE")
        assert bye.uri == f"sip:bob@localhost:{udp_client.port}"
        respond(udp_client, bye, 200, "OK", server.bound_port)
