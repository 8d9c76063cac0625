"""SIP message parser: any bytes give a message or SipParseError; what a message checks, and valid
messages survive a serialise/parse round trip."""

from __future__ import annotations

import contextlib

from hypothesis import example, given
from hypothesis import strategies as st

from ivr.sip.message import SipParseError, SipRequest, SipResponse, parse_message

_TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1)
_VALUE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00", exclude_categories=("Cs",)), max_size=80
).map(str.strip)
_HEADER_NAMES = st.sampled_from(
    ["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact", "Content-Type", "Content-Length", "i", "X-A"]
)


def _exercise(msg: SipRequest | SipResponse) -> None:
    """Touch every accessor the server uses; each may only fail with SipParseError."""
    for prop in ("call_id", "cseq", "from_", "to", "vias", "content_type"):
        with contextlib.suppress(SipParseError):
            getattr(msg, prop)
    with contextlib.suppress(SipParseError):
        msg.check()
    for name in ("From", "To", "Contact"):
        with contextlib.suppress(SipParseError):  # a header value with an open quote already raises here
            if msg.headers.get(name) is not None:
                msg._name_addr(name).sip_uri()


@given(st.binary(max_size=2048), st.booleans())
@example(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: \xc2\xb2\r\n\r\n", True)  # a non-ASCII digit
@example(b"INVITE sip:a@b SIP/2.0\r\nCSeq: \xc2\xb2 INVITE\r\n\r\n", True)
@example(b"BYE sip:a@b SIP/2.0\r\nCSeq: " + b"9" * 5000 + b" BYE\r\n\r\n", True)  # past int()'s digit limit
@example(b"BYE sip:a@b SIP/2.0\r\nMax-Forwards: \xd9\xa3\r\nCSeq: 1 BYE\r\n\r\n", True)
def test_any_bytes_parse_or_raise_sip_parse_error(data: bytes, datagram: bool) -> None:
    try:
        msg = parse_message(data, datagram=datagram)
    except SipParseError:
        return
    _exercise(msg)


@given(
    st.lists(st.tuples(_HEADER_NAMES, _VALUE), max_size=12),
    st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "SIP/2.0 200 OK", "SIP/2.0 486 Busy"]),
    st.binary(max_size=64),
)
def test_header_soup_parses_or_raises_sip_parse_error(headers: list[tuple[str, str]], start: str, body: bytes) -> None:
    line = start if start.startswith("SIP/") else f"{start} sip:ivr@127.0.0.1 SIP/2.0"
    raw = "\r\n".join([line, *(f"{n}: {v}" for n, v in headers)]).encode() + b"\r\n\r\n" + body
    try:
        msg = parse_message(raw)
    except SipParseError:
        return
    _exercise(msg)


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(st.sampled_from(["INVITE", "BYE", "OPTIONS", "INFO", "NOTIFY"]))
    tag, branch = draw(_TOKEN), draw(_TOKEN)
    call_id = draw(st.text(alphabet="abcdef0123456789@.-", min_size=1, max_size=60))
    cseq = draw(st.integers(0, 2**31 - 1))
    msg = SipRequest(method=method, uri=f"sip:{draw(_TOKEN)}@127.0.0.1:5060")
    msg.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{branch};rport")
    msg.headers.add("From", f"<sip:bob@127.0.0.1>;tag={tag}")
    msg.headers.add("To", "<sip:ivr@127.0.0.1>")
    msg.headers.add("Call-ID", call_id)
    msg.headers.add("CSeq", f"{cseq} {method}")
    msg.headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for name, value in draw(st.lists(st.tuples(st.sampled_from(["X-A", "Subject", "User-Agent"]), _VALUE))):
        if value:
            msg.headers.add(name, value)
    msg.body = draw(st.binary(max_size=256))
    return msg


@given(requests(), st.booleans())
def test_valid_requests_round_trip(msg: SipRequest, datagram: bool) -> None:
    parsed = parse_message(msg.to_bytes(), datagram=datagram)
    assert isinstance(parsed, SipRequest)
    parsed.check()
    assert (parsed.method, parsed.uri, parsed.body) == (msg.method, msg.uri, msg.body)
    assert (parsed.call_id, parsed.cseq, parsed.from_.tag) == (msg.call_id, msg.cseq, msg.from_.tag)
    assert [(n, v.strip()) for n, v in parsed.headers.items() if n != "Content-Length"] == msg.headers.items()
    assert parsed.to_bytes() == msg.to_bytes()
