"""SDP: any body gives a negotiation or an SdpError, and what negotiation hands on is always something
the RTP session accepts (so a hostile offer is refused with its own status, never a 500)."""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from ivr.media.rtp_session import RtpParameters
from ivr.sip.sdp import SdpError, build_answer, negotiate, parse_sdp

_LINE_VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"IN IP[46] [0-9a-f.:]{1,40}(/[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"audio [0-9]{1,6} RTP/AVP( [0-9]{1,4}){1,4}", fullmatch=True),
    st.from_regex(r"(rtpmap|fmtp):[0-9]{1,4} [A-Za-z0-9-]{1,16}/[0-9]{1,6}", fullmatch=True),
    st.from_regex(r"ptime:[0-9]{1,8}", fullmatch=True),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "rtpmap:101 telephone-event/8000"]),
)
_LINES = st.lists(st.tuples(st.sampled_from("ocmatsb"), _LINE_VALUES), max_size=14)


def _check(body: bytes) -> None:
    try:
        neg = negotiate(parse_sdp(body))
    except SdpError as exc:
        assert exc.status in (400, 415, 488)
        return
    media = neg.media
    ipaddress.ip_address(media.remote_ip)  # a literal, never a name to resolve
    RtpParameters(
        remote_host=media.remote_ip,
        remote_port=media.remote_port,
        payload_type=media.payload_type,
        codec=media.codec,
        telephone_event_pt=media.telephone_event_pt,
        ptime_ms=media.ptime,
    )
    build_answer(neg, local_ip="127.0.0.1", local_port=4000, session_id=1, session_version=1)


@given(_LINES)
@example(
    [("o", "- 1 1 IN IP4 127.0.0.1"), ("c", "IN IP4 127.0.0.1"), ("m", "audio 4000 RTP/AVP 0"), ("a", "ptime:1000")]
)
@example(
    [
        ("o", "- 1 1 IN IP4 1.2.3.4"),
        ("c", "IN IP4 1.2.3.4"),
        ("m", "audio 1 RTP/AVP 0 50"),
        ("a", "rtpmap:50 telephone-event/8000"),
    ]
)
@example([("o", "-"), ("c", "IN IP4 1.2.3.4"), ("m", "audio 1 RTP/AVP 0"), ("a", "ptime:" + "9" * 5000)])
def test_structured_offers_negotiate_or_refuse(lines: list[tuple[str, str]]) -> None:
    _check(("v=0\r\n" + "".join(f"{k}={v}\r\n" for k, v in lines)).encode())


@given(st.binary(max_size=1024))
def test_any_bytes_negotiate_or_refuse(body: bytes) -> None:
    _check(body)
