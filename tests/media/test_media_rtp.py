import pytest

from ivr.media.rtp import RtpError, RtpPacket, build_rtp, is_rtcp, parse_rtp, seq_delta, ts_delta


def test_round_trip_with_every_header_field() -> None:
    p = RtpPacket(
        0,
        65535,
        0xFFFFFFF0,
        0xDEADBEEF,
        b"\xff" * 160,
        marker=True,
        csrcs=(1, 2, 3),
        extension_profile=0xBEDE,
        extension=b"\x10\x01\x00\x00",
        padding=4,
    )
    data = build_rtp(p)
    assert len(data) == 12 + 12 + 4 + 4 + 160 + 4
    q = parse_rtp(data)
    assert q == p


def test_plain_packet_fields() -> None:
    data = bytes([0x80, 0x80 | 8, 0x12, 0x34, 0, 0, 0, 160, 0, 0, 0, 7]) + b"\xd5" * 160
    p = parse_rtp(data)
    assert (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc) == (8, True, 0x1234, 160, 7)
    assert p.payload == b"\xd5" * 160 and p.csrcs == () and p.extension_profile is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (b"\x80\x00\x00", "short"),
        (bytes([0x40, 0] + [0] * 10), "version"),
        (b"garbage-datagram-not-rtp", "version"),
        (bytes([0xA0, 0] + [0] * 10) + b"\x00\x00\x00\x00", "padding"),  # padding count 0
        (bytes([0xA0, 0] + [0] * 10) + b"\x00\x00\x00\x09", "padding"),  # more than the packet
        (bytes([0x84, 0] + [0] * 10) + b"\x00" * 8, "csrc"),  # 4 CSRCs, room for 2
        (bytes([0x90, 0] + [0] * 10) + b"\xbe\xde", "extension"),
        (bytes([0x90, 0] + [0] * 10) + b"\xbe\xde\x00\x05" + b"\x00" * 8, "extension"),
    ],
)
def test_malformed_packets_raise_typed_errors(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as e:
        parse_rtp(data)
    assert e.value.reason == reason


def test_rtcp_detected_on_muxed_port() -> None:
    sr = bytes([0x80, 200, 0, 6]) + b"\x00" * 24
    rr = bytes([0x81, 201, 0, 7]) + b"\x00" * 28
    assert is_rtcp(sr) and is_rtcp(rr)
    assert not is_rtcp(build_rtp(RtpPacket(0, 1, 2, 3, b"\x00" * 160)))
    # marker + PT 72 would look like SR: RFC 5761 forbids PT 72-76 for exactly this reason
    assert not is_rtcp(build_rtp(RtpPacket(101, 1, 2, 3, b"\x00" * 4, marker=True)))


def test_wraparound_deltas() -> None:
    assert seq_delta(2, 65534) == 4
    assert seq_delta(65534, 2) == -4
    assert ts_delta(100, 0xFFFFFF00) == 356
    assert ts_delta(0xFFFFFF00, 100) == -356


def test_build_rejects_invalid_fields() -> None:
    with pytest.raises(ValueError):
        build_rtp(RtpPacket(128, 0, 0, 0, b""))
    with pytest.raises(ValueError):
        build_rtp(RtpPacket(0, 0, 0, 0, b"", extension_profile=1, extension=b"\x00"))
