"""SDP offer parsing and the answer we build (RFC 4566 / RFC 3264)."""

from __future__ import annotations

import pytest

from ivr.sip.call import negotiate_body, refusal
from ivr.sip.message import Headers, SipRequest
from ivr.sip.sdp import SdpError, SdpNotAcceptable, UnsupportedBody, build_answer, negotiate, parse_sdp


def offer(m_lines: str, session: str = "c=IN IP4 192.0.2.10\r\n") -> bytes:
    return ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\n" + session + "t=0 0\r\n" + m_lines).encode()


def answer_lines(neg_offer: bytes, port: int = 20000) -> list[str]:
    neg = negotiate(parse_sdp(neg_offer))
    body = build_answer(neg, local_ip="127.0.0.1", local_port=port, session_id=42, session_version=7)
    return body.decode().split("\r\n")


@pytest.mark.parametrize(
    "fmts, rtpmaps, codec, pt",
    [
        ("0", "", "PCMU", 0),
        ("8", "", "PCMA", 8),
        ("0 8", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "PCMU", 0),
        ("8 0", "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n", "PCMA", 8),
        ("18 8 0", "a=rtpmap:18 G729/8000\r\n", "PCMA", 8),
        ("9 96 0", "a=rtpmap:9 G722/8000\r\na=rtpmap:96 opus/48000/2\r\n", "PCMU", 0),
        ("97", "a=rtpmap:97 pcmu/8000\r\n", "PCMU", 97),  # G.711 on a dynamic payload type
    ],
)
def test_codec_choice_follows_callers_order(fmts: str, rtpmaps: str, codec: str, pt: int) -> None:
    neg = negotiate(parse_sdp(offer(f"m=audio 4000 RTP/AVP {fmts}\r\n{rtpmaps}")))
    assert (neg.media.codec, neg.media.payload_type) == (codec, pt)
    assert (neg.media.remote_ip, neg.media.remote_port) == ("192.0.2.10", 4000)
    assert neg.media.telephone_event_pt is None and neg.media.ptime == 20


@pytest.mark.parametrize("te", [96, 101, 127])
def test_telephone_event_at_any_offered_pt(te: int) -> None:
    sdp = offer(
        f"m=audio 4000 RTP/AVP 0 {te}\r\na=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\na=ptime:30\r\n"
    )
    neg = negotiate(parse_sdp(sdp))
    assert neg.media.telephone_event_pt == te and neg.media.ptime == 30
    lines = answer_lines(sdp)
    assert f"m=audio 20000 RTP/AVP 0 {te}" in lines
    assert f"a=rtpmap:{te} telephone-event/8000" in lines and f"a=fmtp:{te} 0-15" in lines
    assert "a=rtpmap:0 PCMU/8000" in lines and "a=ptime:20" in lines and "a=sendrecv" in lines
    assert "o=voicenav 42 7 IN IP4 127.0.0.1" in lines and "c=IN IP4 127.0.0.1" in lines


def test_first_telephone_event_wins_when_several_offered() -> None:
    sdp = offer(
        "m=audio 4000 RTP/AVP 0 8 96 101\r\na=rtpmap:96 telephone-event/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
    assert negotiate(parse_sdp(sdp)).media.telephone_event_pt == 96
    # a telephone-event at another clock rate does not fit 8 kHz G.711
    sdp = offer("m=audio 4000 RTP/AVP 0 110\r\na=rtpmap:110 telephone-event/48000\r\n")
    assert negotiate(parse_sdp(sdp)).media.telephone_event_pt is None


@pytest.mark.parametrize(
    "m_lines, warning",
    [
        ("m=audio 4000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n", 305),
        ("m=audio 4000 RTP/SAVP 0\r\n", 305),
        ("m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/16000\r\na=rtpmap:8 G722/8000\r\n", 305),
        ("m=video 4002 RTP/AVP 31\r\n", 304),
        ("m=audio 0 RTP/AVP 0\r\n", 304),
    ],
)
def test_unusable_offers(m_lines: str, warning: int) -> None:
    with pytest.raises(SdpNotAcceptable) as info:
        negotiate(parse_sdp(offer(m_lines)))
    assert info.value.warning_code == warning


def test_multiple_m_lines_other_streams_declined_with_port_0() -> None:
    sdp = offer(
        "m=video 5000 RTP/AVP 31\r\na=rtpmap:31 H261/90000\r\n"
        "m=audio 4000 RTP/SAVP 0\r\n"
        "m=audio 4002 RTP/AVP 8 0 101\r\nc=IN IP4 198.51.100.5\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "m=audio 4004 RTP/AVP 0\r\n"
    )
    neg = negotiate(parse_sdp(sdp))
    assert neg.index == 2
    assert (neg.media.remote_ip, neg.media.remote_port, neg.media.codec) == ("198.51.100.5", 4002, "PCMA")
    m = [ln for ln in answer_lines(sdp) if ln.startswith("m=")]
    assert m == ["m=video 0 RTP/AVP 31", "m=audio 0 RTP/SAVP 0", "m=audio 20000 RTP/AVP 8 101", "m=audio 0 RTP/AVP 0"]


def test_connection_at_media_level_only_and_missing() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 203.0.113.9\r\n", session="")
    assert negotiate(parse_sdp(sdp)).media.remote_ip == "203.0.113.9"
    with pytest.raises(SdpError, match="c="):
        negotiate(parse_sdp(offer("m=audio 4000 RTP/AVP 0\r\n", session="")))


@pytest.mark.parametrize(
    "attr, offered, answered",
    [
        ("a=sendonly\r\n", "sendonly", "recvonly"),
        ("a=recvonly\r\n", "recvonly", "sendonly"),
        ("a=inactive\r\n", "inactive", "inactive"),
        ("", "sendrecv", "sendrecv"),
    ],
)
def test_directions(attr: str, offered: str, answered: str) -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\r\n" + attr)
    neg = negotiate(parse_sdp(sdp))
    assert neg.media.direction == offered
    assert neg.media.on_hold == (offered in ("sendonly", "inactive"))
    assert f"a={answered}" in answer_lines(sdp)


def test_hold_with_zero_address_and_session_level_direction() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4 0.0.0.0\r\na=sendonly\r\n")
    media = negotiate(parse_sdp(sdp)).media
    assert media.on_hold and media.remote_ip == "0.0.0.0" and media.direction == "sendonly"


def test_ipv6_answer() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP6 2001:db8::5\r\n")
    neg = negotiate(parse_sdp(sdp))
    assert neg.media.remote_ip == "2001:db8::5"
    body = build_answer(neg, local_ip="::1", local_port=1234, session_id=1, session_version=1).decode()
    assert "c=IN IP6 ::1" in body


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"hello",
        b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n",  # no o=
        offer("m=audio port RTP/AVP 0\r\n"),
        offer("m=audio 4000\r\n"),
        offer("m=audio 70000 RTP/AVP 0\r\n"),
        offer("m=audio 4000 RTP/AVP 0\r\na=rtpmap:x PCMU/8000\r\n"),
        offer("m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n"),
        offer("m=audio 4000 RTP/AVP 0\r\na=ptime:fast\r\n"),
        offer("m=audio 4000 RTP/AVP 0\r\n", session="c=IN IP4\r\n"),
        offer("m=audio 4000 RTP/AVP 0\r\nthis is not sdp\r\n"),
        b"v=0\r\no=- 1 1 IN IP4 h\r\n\xff\xfe",
    ],
)
def test_malformed_sdp(bad: bytes) -> None:
    with pytest.raises(SdpError):
        negotiate(parse_sdp(bad))


def _invite(body: bytes, content_type: str = "application/sdp") -> SipRequest:
    headers = Headers()
    for name, value in (
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1"),
        ("From", "<sip:caller@192.0.2.10>;tag=a"),
        ("To", "<sip:ivr@192.0.2.1>"),
        ("Call-ID", "c1@192.0.2.10"),
        ("CSeq", "1 INVITE"),
        ("Content-Type", content_type),
    ):
        headers.add(name, value)
    return SipRequest(method="INVITE", uri="sip:ivr@192.0.2.1", headers=headers, body=body)


@pytest.mark.parametrize(
    "body, content_type, error, status, header",
    [
        (b"not sdp at all", "application/sdp", SdpError, 400, None),
        (offer("m=audio 4000 RTP/AVP 0\r\n", session=""), "application/sdp", SdpError, 400, None),  # no c=
        (b"hello", "text/plain", UnsupportedBody, 415, ("Accept", "application/sdp")),
        (offer("m=audio 4000 RTP/AVP 18\r\n"), "application/sdp", SdpNotAcceptable, 488, "Warning"),
        (offer("m=video 4000 RTP/AVP 96\r\n"), "application/sdp", SdpNotAcceptable, 488, "Warning"),
    ],
)
def test_each_body_error_carries_its_status(
    body: bytes, content_type: str, error: type[SdpError], status: int, header: tuple[str, str] | str | None
) -> None:
    request = _invite(body, content_type)
    with pytest.raises(error) as info:
        negotiate_body(request, lambda _address: True)
    assert type(info.value) is error and info.value.status == status
    response = refusal(request, info.value, "tag1", "192.0.2.1")
    assert response.status == status and response.to.tag == "tag1"
    if isinstance(header, tuple):
        assert response.headers.get(header[0]) == header[1]
    elif header == "Warning":
        assert response.headers.get("Warning", "").startswith(f"{info.value.warning_code} 192.0.2.1 ")
    else:
        assert response.headers.get("Accept") is None and response.headers.get("Warning") is None
