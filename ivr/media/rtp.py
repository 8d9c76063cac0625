"""RTP packets (RFC 3550): parse and build, and telling RTCP apart on a muxed port (RFC 5761)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")

# RFC 5761 §4: with RTP/RTCP multiplexing the second byte of RTCP is its packet type (SR 200 ... APP 204);
# RTP payload types 72-76 are never assigned so that these values stay unambiguous.
RTCP_PACKET_TYPES = range(200, 205)


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet. `reason` is a short stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0  # padding octets to append when built (0 = none)

    def build(self) -> bytes:
        return build_rtp(self)


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet arriving on an RTP/RTCP-muxed port."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and data[1] in RTCP_PACKET_TYPES


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet; raise `RtpError` for anything malformed (callers count and drop those)."""
    if len(data) < _HEADER.size:
        raise RtpError("short", f"{len(data)} bytes, an RTP header needs 12")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError("version", f"version {b0 >> 6}")
    end = len(data)
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or padding > end - _HEADER.size:
            raise RtpError("padding", f"padding count {padding} in a {end}-byte packet")
        end -= padding
    offset = _HEADER.size
    csrc_count = b0 & 0x0F
    if offset + 4 * csrc_count > end:
        raise RtpError("csrc", f"{csrc_count} CSRCs do not fit in {end} bytes")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset) if csrc_count else ()
    offset += 4 * csrc_count
    profile: int | None = None
    extension = b""
    if b0 & 0x10:
        if offset + 4 > end:
            raise RtpError("extension", "header extension flag set but no extension header")
        profile, words = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + 4 * words > end:
            raise RtpError("extension", f"extension of {words} words overruns the packet")
        extension = bytes(data[offset : offset + 4 * words])
        offset += 4 * words
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extension=extension,
        padding=padding,
    )


def build_rtp(p: RtpPacket) -> bytes:
    if not 0 <= p.payload_type < 128:
        raise ValueError(f"payload type {p.payload_type} out of range")
    if len(p.csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    if len(p.extension) % 4:
        raise ValueError("header extension length must be a multiple of 4")
    if not 0 <= p.padding < 256:
        raise ValueError("padding must be 0-255 octets")
    has_ext = p.extension_profile is not None
    b0 = (RTP_VERSION << 6) | (0x20 if p.padding else 0) | (0x10 if has_ext else 0) | len(p.csrcs)
    b1 = (0x80 if p.marker else 0) | p.payload_type
    parts = [_HEADER.pack(b0, b1, p.sequence & 0xFFFF, p.timestamp & 0xFFFFFFFF, p.ssrc & 0xFFFFFFFF)]
    parts += [struct.pack("!I", c) for c in p.csrcs]
    if has_ext:
        parts.append(struct.pack("!HH", p.extension_profile, len(p.extension) // 4) + p.extension)
    parts.append(p.payload)
    if p.padding:
        parts.append(bytes(p.padding - 1) + bytes([p.padding]))
    return b"".join(parts)


def seq_delta(a: int, b: int) -> int:
    """Signed distance from 16-bit sequence number `b` to `a` (a - b), across wraparound."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def ts_delta(a: int, b: int) -> int:
    """Signed distance from 32-bit RTP timestamp `b` to `a` (a - b), across wraparound."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d
