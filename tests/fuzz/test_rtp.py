"""RTP and RFC 4733: any datagram parses or raises RtpError, valid packets round-trip, and the
telephone-event receiver takes any packet stream without error or unbounded state."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from ivr.media.dtmf import DIGITS, DtmfPayloadError, Rfc4733Receiver, TelephoneEvent
from ivr.media.rtp import RtpError, RtpPacket, is_rtcp, parse_rtp

_U32 = st.integers(0, 2**32 - 1)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 2**16 - 1),
    timestamp=_U32,
    ssrc=_U32,
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(_U32, max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 2**16 - 1),
    extension=st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]),
    padding=st.integers(0, 255),
)


@given(st.binary(max_size=1500))
def test_any_datagram_parses_or_raises_rtp_error(data: bytes) -> None:
    is_rtcp(data)
    try:
        pkt = parse_rtp(data)
    except RtpError:
        return
    assert 0 <= pkt.payload_type < 128 and len(pkt.payload) <= len(data) - 12


@given(packets)
def test_built_packets_round_trip(pkt: RtpPacket) -> None:
    if pkt.extension_profile is None:
        pkt = RtpPacket(**{**{f: getattr(pkt, f) for f in RtpPacket.__slots__}, "extension": b""})
    assert parse_rtp(pkt.build()) == pkt


@given(st.lists(st.tuples(_U32, _U32, st.binary(max_size=8)), max_size=60))
def test_receiver_takes_any_event_stream(stream: list[tuple[int, int, bytes]]) -> None:
    receiver = Rfc4733Receiver()
    for ssrc, timestamp, payload in stream:
        with contextlib.suppress(DtmfPayloadError):
            event = receiver.feed(RtpPacket(101, 0, timestamp, ssrc, payload))
            assert event is None or event.digit in DIGITS
        assert len(receiver._seen) <= Rfc4733Receiver.MAX_SSRCS


@given(st.builds(TelephoneEvent, st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 2**16 - 1)))
def test_telephone_events_round_trip(event: TelephoneEvent) -> None:
    assert TelephoneEvent.parse(event.encode()) == event
