"""SIP message syntax: RFC 4475-style torture cases, round trips, and fuzzing for crash-freedom."""

from __future__ import annotations

import random

import pytest

from ivr.sip.message import (
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    make_response,
    parse_message,
)

INVITE = (
    "INVITE sip:ivr@127.0.0.1:5099 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-abc;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice, the \\"caller\\"" <sip:alice@127.0.0.1:6001>;tag=1928301774\r\n'
    "To: <sip:ivr@127.0.0.1:5099>\r\n"
    "Call-ID: a84b4c76e66710@pc33\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:6001>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def parse_req(text: str | bytes, datagram: bool = True) -> SipRequest:
    msg = parse_message(text.encode() if isinstance(text, str) else text, datagram=datagram)
    assert isinstance(msg, SipRequest)
    msg.check()
    return msg


def test_basic_invite() -> None:
    req = parse_req(INVITE)
    assert req.method == "INVITE" and req.uri == "sip:ivr@127.0.0.1:5099"
    assert req.call_id == "a84b4c76e66710@pc33"
    assert req.cseq == (314159, "INVITE")
    assert req.from_.display == 'Alice, the "caller"' and req.from_.tag == "1928301774"
    assert req.to.tag is None
    assert req.body == b"v=0\n"
    assert req.top_via.branch == "z9hG4bK-abc" and "rport" in req.top_via.params
    assert req.content_type == "application/sdp"


def test_compact_forms_and_case() -> None:
    text = (
        "OPTIONS sip:ivr@example.com SIP/2.0\r\n"
        "v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
        "f: <sip:a@example.com>;tag=x\r\nt: sip:ivr@example.com\r\n"
        "i: cid-1\r\ncseq: 1 OPTIONS\r\nm: <sip:a@10.0.0.1>\r\nk: timer, 100rel\r\n"
        "c: application/sdp\r\nl: 0\r\n\r\n"
    )
    req = parse_req(text)
    assert req.call_id == "cid-1"
    assert req.headers.values("Supported") == ["timer", "100rel"]
    assert req.headers.get("Contact") == "<sip:a@10.0.0.1>"
    assert req.to.uri == "sip:ivr@example.com"
    out = req.to_bytes().decode()
    assert "Call-ID: cid-1\r\n" in out and "Via: SIP/2.0/UDP" in out and "Content-Length: 0\r\n\r\n" in out


def test_folded_lines_and_spacing() -> None:
    text = INVITE.replace("Call-ID: a84b4c76e66710@pc33\r\n", "Call-ID:\r\n   a84b4c76e66710@pc33\r\n")
    text = text.replace("Max-Forwards: 70", "Max-Forwards   :   70")
    req = parse_req(text)
    assert req.call_id == "a84b4c76e66710@pc33"
    assert req.headers.get("max-forwards") == "70"


def test_multiple_vias_in_order() -> None:
    text = INVITE.replace(
        "Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-abc;rport\r\n",
        "Via: SIP/2.0/UDP proxy1.example.com;branch=z9hG4bK-1, "
        "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-2\r\n"
        "v: SIP / 2.0 / UDP 10.1.1.1:5062 ;branch=z9hG4bK-3;received=10.1.1.2\r\n",
    )
    req = parse_req(text)
    vias = req.vias
    assert [v.branch for v in vias] == ["z9hG4bK-1", "z9hG4bK-2", "z9hG4bK-3"]
    assert vias[1].transport == "TCP" and vias[1].host == "2001:db8::1" and vias[1].port == 5070
    assert vias[2].sent_by == ("10.1.1.1", 5062) and vias[2].params["received"] == "10.1.1.2"
    assert str(vias[1]) == "SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-2"
    resp = make_response(req, 200, to_tag="ourtag")
    assert resp.headers.values("Via") == req.headers.values("Via")
    assert resp.to.tag == "ourtag"


def test_content_length_rules() -> None:
    no_cl = INVITE.replace("Content-Length: 4\r\n", "")
    # UDP: no Content-Length means the body runs to the end of the datagram (§18.3)
    assert parse_req(no_cl).body == b"v=0\n"
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(no_cl.encode(), datagram=False)
    # a body shorter than announced is a truncated datagram
    with pytest.raises(SipParseError, match="shorter"):
        parse_message(INVITE.replace("Content-Length: 4", "Content-Length: 400").encode())
    # extra bytes beyond Content-Length are discarded
    assert parse_req(INVITE.replace("Content-Length: 4", "Content-Length: 2")).body == b"v="
    with pytest.raises(SipParseError):
        parse_message(INVITE.replace("Content-Length: 4", "Content-Length: -4").encode())
    with pytest.raises(SipParseError, match="conflicting"):
        parse_message(INVITE.replace("Content-Length: 4\r\n", "Content-Length: 4\r\nl: 3\r\n").encode())


def test_response_parse() -> None:
    msg = parse_message(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        b"From: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REFER\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, SipResponse) and msg.status == 180 and msg.reason == "Ringing"
    assert msg.cseq == (2, "REFER") and msg.to.tag == "2"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x00\xff\xfe garbage \x01", "end of headers"),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n", "end of headers"),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "version"),
        (b"INVITE  sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", "start line"),
        (b"SIP/2.0 99 Low\r\n\r\n", "start line|status"),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", "header line"),
        (b"INVITE sip:a@b SIP/2.0\r\n continuation first\r\n\r\n", "continuation"),
        (b"INVITE sip:a@b SIP/2.0\r\nSubject: \xc3\x28\r\n\r\n", "UTF-8"),
        (b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n", "too large"),
        (b"INVITE sip:a@b SIP/2.0\r\n" + b"X: 1\r\n" * 200 + b"\r\n", "too many"),
        (b"\r\n\r\n\r\n", "empty"),
    ],
)
def test_malformed_framing(data: bytes, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        parse_message(data)


@pytest.mark.parametrize(
    "old, new, reason",
    [
        ("CSeq: 314159 INVITE", "CSeq: 314159 BYE", "CSeq method"),
        ("CSeq: 314159 INVITE", "CSeq: 99999999999 INVITE", "CSeq"),
        ("CSeq: 314159 INVITE", "CSeq: INVITE", "CSeq"),
        ("Call-ID: a84b4c76e66710@pc33\r\n", "", "Call-ID"),
        ("To: <sip:ivr@127.0.0.1:5099>", "To: <sip:ivr@127.0.0.1:5099", "unterminated"),
        ('From: "Alice, the \\"caller\\"" <sip:alice@127.0.0.1:6001>', 'From: "Alice <sip:alice@h>', "display"),
        ("Via: SIP/2.0/UDP 127.0.0.1:6001", "Via: SIP/2.0/UDP 127.0.0.1:99999", "port"),
        ("Via: SIP/2.0/UDP 127.0.0.1:6001", "Via: HTTP/1.1 127.0.0.1", "Via"),
        ("Max-Forwards: 70", "Max-Forwards: many", "Max-Forwards"),
    ],
)
def test_malformed_headers(old: str, new: str, reason: str) -> None:
    req = parse_message(INVITE.replace(old, new).encode())
    with pytest.raises(SipParseError, match=reason):
        req.check()


def test_uri_and_name_addr() -> None:
    u = SipUri.parse("sips:alice:secret@[2001:db8::7]:5061;transport=tcp;lr?subject=hi")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "secret", "2001:db8::7", 5061)
    assert u.params == {"transport": "tcp", "lr": None} and u.headers == "subject=hi"
    assert str(u) == "sips:alice:secret@[2001:db8::7]:5061;transport=tcp;lr?subject=hi"
    assert SipUri.parse("sip:example.com").default_port == 5060
    for bad in ("http://x", "sip:", "sip:@host", "sip:a@ho st", "sip:a@host:0"):
        with pytest.raises(SipParseError):
            SipUri.parse(bad)
    na = NameAddr.parse("sip:bob@example.com;tag=xyz")  # addr-spec: params belong to the header
    assert na.uri == "sip:bob@example.com" and na.tag == "xyz"
    na = NameAddr.parse("Bob <sip:bob@example.com;user=phone>;tag=1;expires=30")
    assert na.display == "Bob" and na.uri == "sip:bob@example.com;user=phone" and na.params["expires"] == "30"
    assert str(na) == '"Bob" <sip:bob@example.com;user=phone>;tag=1;expires=30'
    assert Via.parse("SIP/2.0/udp host;branch=z9hG4bKq").sent_by == ("host", 5060)


def test_contact_list_with_commas_in_quotes() -> None:
    req = parse_req(
        INVITE.replace("Contact: <sip:alice@127.0.0.1:6001>", 'Contact: "Doe, John" <sip:j@h>, <sip:k@h;x=1,2>')
    )
    assert req.headers.values("Contact") == ['"Doe, John" <sip:j@h>', "<sip:k@h;x=1,2>"]


def test_round_trip() -> None:
    req = parse_req(INVITE)
    again = parse_req(req.to_bytes())
    assert again.headers.items() == req.headers.items() and again.body == req.body


def _mutations(rng: random.Random, base: bytes, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(base)
        op = rng.randrange(4)
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            del b[rng.randrange(len(b)) :]
        elif op == 2:
            i = rng.randrange(len(b))
            b[i:i] = bytes(rng.choice(b':;,<>"\r\n @=') for _ in range(rng.randint(1, 5)))
        else:
            i, j = sorted(rng.randrange(len(b)) for _ in range(2))
            del b[i:j]
        out.append(bytes(b))
    return out


def test_fuzz_never_raises_anything_but_parse_errors() -> None:
    rng = random.Random(4475)
    inputs = _mutations(rng, INVITE.encode(), 3000) + [rng.randbytes(rng.randint(0, 300)) for _ in range(500)]
    parsed = 0
    for data in inputs:
        for datagram in (True, False):
            try:
                msg = parse_message(data, datagram=datagram)
                msg.check()
                _ = (msg.from_.tag, msg.to.tag, [v.sent_by for v in msg.vias], msg.content_type)
                parsed += 1
            except SipParseError:
                pass
    assert parsed > 100  # the mutations leave many messages valid: the parser is not just refusing everything
