"""Hostile INVITEs over raw UDP: SDP that would aim our RTP elsewhere, out-of-range ptime, a telephone-event
on a static payload type, identifiers too long to store. Each gets a definite answer, never a 500."""

from __future__ import annotations

import asyncio

import pytest

from ivr.media.rtp_session import RtpParameters
from ivr.sip import IncomingCall
from ivr.sip.access import SipAccess, SipAccessParams
from ivr.sip.message import MAX_ID_CHARS
from ivr.sip.sdp import PTIME_MS
from ivr.sip.server import SIP_REJECTED_CALLS
from tests.sip.helpers import SDP, Dialer, UdpClient, answer_and_wait, running_server


def sdp(conn: str = "IN IP4 127.0.0.1", extra: str = "", te_pt: int = 96) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc={conn}\r\nt=0 0\r\n"
        f"m=audio 4000 RTP/AVP 8 0 {te_pt}\r\na=rtpmap:{te_pt} telephone-event/8000\r\n{extra}"
    )


@pytest.mark.parametrize(
    "body, warning, reason",
    [
        (sdp("IN IP4 198.51.100.7"), 301, "media-address"),  # a third party: our RTP would flood it
        (sdp("IN IP4 victim.example.com"), 301, "media-address"),  # a hostname: resolved per packet, and anyone's
        (sdp("IN IP4 224.0.1.1/127"), 301, "media-address"),  # multicast
        (sdp("IN IP4 255.255.255.255"), 301, "media-address"),  # broadcast (reserved)
        (sdp(te_pt=50), 305, "no-common-codec"),  # telephone-event outside the dynamic range
    ],
)
async def test_unusable_media_is_refused_with_488(udp_client: UdpClient, body: str, warning: int, reason: str) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise AssertionError("no call expected")

    before = {r: SIP_REJECTED_CALLS.labels(r)._value.get() for r in ("media-address", "no-common-codec")}
    async with running_server(on_call) as server:
        Dialer(udp_client, server.bound_port).invite(sdp=body)
        resp = await udp_client.response()
        assert resp.status == 488
        assert (resp.headers.get("Warning") or "").startswith(f"{warning} ")
        assert server.active_calls == 0
    after = {r: SIP_REJECTED_CALLS.labels(r)._value.get() for r in before}
    assert {r: after[r] - before[r] for r in before} == {r: float(r == reason) for r in before}


async def test_third_party_media_allowed_when_the_check_is_off(udp_client: UdpClient, rtp_port: int) -> None:
    media: list[str] = []

    async def on_call(call: IncomingCall) -> None:
        assert call.media is not None
        media.append(call.media.remote_ip)
        await answer_and_wait(call, rtp_port)

    access = SipAccessParams(media_must_match_source=False)
    async with running_server(on_call, access=access) as server:
        d = Dialer(udp_client, server.bound_port)
        await d.establish(sdp("IN IP4 198.51.100.7"))
        assert media == ["198.51.100.7"]
        d.request("BYE")
        await udp_client.response(200)


@pytest.mark.parametrize(
    "body, ip, ptime",
    [
        (sdp(extra="a=ptime:1000\r\n"), "127.0.0.1", 20),  # a hint we cannot follow: ignored
        (sdp(extra="a=ptime:5\r\n"), "127.0.0.1", 20),
        (sdp(extra="a=ptime:30\r\n"), "127.0.0.1", 30),
        (sdp("IN IP4 0.0.0.0"), "0.0.0.0", 20),  # hold: no address to check
    ],
)
async def test_usable_offers_are_answered(udp_client: UdpClient, rtp_port: int, body: str, ip: str, ptime: int) -> None:
    offers: list[tuple[str, int]] = []

    async def on_call(call: IncomingCall) -> None:
        assert call.media is not None
        offers.append((call.media.remote_ip, call.media.ptime))
        RtpParameters(remote_host=call.media.remote_ip, remote_port=4000, ptime_ms=call.media.ptime)
        await answer_and_wait(call, rtp_port)

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        ok = await d.establish(body)
        assert ok.status == 200 and offers == [(ip, ptime)]
        d.request("BYE")
        await udp_client.response(200)


async def test_reinvite_cannot_redirect_media(udp_client: UdpClient, rtp_port: int) -> None:
    calls: list[IncomingCall] = []

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        await answer_and_wait(call, rtp_port)

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        await d.establish()
        d.request("INVITE", extra="Content-Type: application/sdp\r\n", body=sdp("IN IP4 198.51.100.7"))
        resp = await udp_client.response()
        assert resp.status == 488 and (resp.headers.get("Warning") or "").startswith("301 ")
        assert calls[0].media is not None and calls[0].media.remote_ip == "127.0.0.1"
        d.request("BYE")
        await udp_client.response(200)


@pytest.mark.parametrize("field", ["Call-ID", "From tag", "Via branch"])
async def test_overlong_identifiers_get_400(udp_client: UdpClient, field: str) -> None:
    async def on_call(call: IncomingCall) -> None:
        raise AssertionError("no call expected")

    long = "a" * (MAX_ID_CHARS + 1)
    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        if field == "Call-ID":
            d.call_id = long
            d.invite()
        elif field == "From tag":
            d.tag = long
            d.invite()
        else:
            d.invite(branch="z9hG4bK" + long)
        resp = await udp_client.response()
        assert resp.status == 400 and field in resp.reason
        await asyncio.sleep(0.02)
        assert server.active_calls == 0


async def test_longest_call_id_is_a_call(udp_client: UdpClient, rtp_port: int) -> None:
    async def on_call(call: IncomingCall) -> None:
        await answer_and_wait(call, rtp_port)

    async with running_server(on_call) as server:
        d = Dialer(udp_client, server.bound_port)
        d.call_id = "c" * MAX_ID_CHARS
        ok = await d.establish(SDP.format(port=4000, extra=""))
        assert ok.status == 200 and ok.call_id == d.call_id
        d.request("BYE")
        await udp_client.response(200)


def test_ptime_range_is_what_the_rtp_session_takes() -> None:
    for ptime in (PTIME_MS.start, PTIME_MS.stop - 1):
        RtpParameters(ptime_ms=ptime)
    for ptime in (PTIME_MS.start - 1, PTIME_MS.stop):
        with pytest.raises(ValueError):
            RtpParameters(ptime_ms=ptime)


@pytest.mark.parametrize(
    "allow, address, source, allowed",
    [
        (("127.0.0.0/8",), "127.0.0.1", "127.0.0.1", True),
        (("10.0.0.0/8",), "10.1.2.3", "10.9.9.9", True),  # another gateway of the allowlist
        (("10.0.0.0/8",), "198.51.100.7", "10.9.9.9", False),
        (("any",), "198.51.100.7", "203.0.113.1", False),  # "any" admits signalling, not media targets
        (("any",), "203.0.113.1", "::ffff:203.0.113.1", True),
        (("10.0.0.0/8",), "0.0.0.0", "10.9.9.9", True),  # hold
    ],
)
def test_media_address_policy(allow: tuple[str, ...], address: str, source: str, allowed: bool) -> None:
    access = SipAccess(SipAccessParams(allow_sources=allow))
    assert access.media_allowed(address, source) is allowed
    off = SipAccess(SipAccessParams(allow_sources=allow, media_must_match_source=False))
    assert off.media_allowed(address, source) is True
