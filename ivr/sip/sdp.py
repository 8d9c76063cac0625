"""SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for a G.711 + RFC 4733 endpoint.

We accept exactly one audio stream: the first `m=audio` line over RTP/AVP that offers PCMU or PCMA.
Every other m= line is declined with port 0, as RFC 3264 §6 requires, so the answer keeps the
offer's m= line count and order.

Hostile offers: a connection address must be an IP literal of the family its c= line names, neither
multicast nor reserved (a hostname would need resolving, a group address would fan our RTP out); other
addresses are refused with 488 and Warning 301. `a=ptime` outside what we packetize is only a hint
(RFC 4566 §6, RFC 3264 §5.1), so it is ignored (20 ms) rather than refused. A telephone-event must sit on
a dynamic payload type (RFC 3551 §3: 96-127), else 488 with Warning 305.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ivr.media.codecs import CODECS, CodecName, by_name, by_static_payload_type, codec

log = logging.getLogger(__name__)

# What the RTP session packetizes (RtpParameters.ptime_ms); an offer's ptime outside it is ignored.
PTIME_MS = range(10, 61)
DEFAULT_PTIME_MS = 20
# RFC 3551 §3: payload types a session may bind dynamically, as telephone-event needs.
DYNAMIC_PAYLOAD_TYPES = range(96, 128)
HOLD_ADDRESSES = ("0.0.0.0", "::")

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """A session body we cannot use; `status` is the SIP status that refuses it. This class: the body
    is not valid SDP (400)."""

    status: ClassVar[int] = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedBody(SdpError):
    """The body is not SDP at all (415, with Accept)."""

    status: ClassVar[int] = 415


class SdpNotAcceptable(SdpError):
    """Valid SDP with nothing we can use (488, with a Warning)."""

    status: ClassVar[int] = 488

    def __init__(self, reason: str, warning_code: int = 305) -> None:
        super().__init__(reason)
        # 301: incompatible network address, 304: media type not available, 305: incompatible format
        self.warning_code = warning_code


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None
    direction: Direction | None = None


@dataclass(slots=True)
class SessionDescription:
    origin: str
    connection: str | None = None
    direction: Direction | None = None
    ptime: int | None = None
    media: list[MediaDescription] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """What was negotiated for the caller's audio: where to send RTP and how to encode it."""

    remote_ip: str
    remote_port: int
    codec: CodecName
    payload_type: int
    telephone_event_pt: int | None
    ptime: int
    direction: Direction  # as offered by the caller

    @property
    def on_hold(self) -> bool:
        """The caller does not want our audio (RFC 3264 §8.4 hold, or the old c=0.0.0.0 form)."""
        return self.direction in ("sendonly", "inactive") or self.remote_ip in HOLD_ADDRESSES or self.remote_port == 0


@dataclass(frozen=True, slots=True)
class Negotiation:
    offer: SessionDescription
    media: MediaOffer
    index: int  # which m= line carries the accepted audio stream


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {value!r}")
    addr = parts[2].split("/", 1)[0]  # multicast TTL/count suffix
    if not addr or any(c.isspace() for c in addr):
        raise SdpError(f"bad connection address {addr!r}")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        # RFC 4566 allows a domain name; resolving it would block and let the caller steer our RTP
        raise SdpNotAcceptable(f"connection address {addr[:64]!r} is not an IP literal", warning_code=301) from None
    if ip.version != (4 if parts[1] == "IP4" else 6):
        raise SdpError(f"connection address {addr!r} is not {parts[1]}")
    if ip.is_unspecified:
        return str(ip)  # the RFC 2543 way of putting a call on hold
    if ip.is_multicast or ip.is_reserved:
        raise SdpNotAcceptable(f"connection address {addr!r} cannot receive unicast RTP", warning_code=301)
    return str(ip)


def _int(value: str, what: str) -> int:
    # ASCII only: str.isdigit() also admits digits int() refuses ("²"); ten digits bound the work
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise SdpError(f"bad {what} {value!r}")
    return int(value)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raises SdpError on anything malformed that matters for audio."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("SDP is not UTF-8") from exc
    lines = [ln.rstrip("\r") for ln in data.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    origin = ""
    current: MediaDescription | None = None
    session_conn: str | None = None
    session_dir: Direction | None = None
    session_ptime: int | None = None
    media: list[MediaDescription] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"bad SDP line {line[:60]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "o":
            origin = value
        elif kind == "c":
            addr = _connection_address(value)
            if current is None:
                session_conn = addr
            else:
                current.connection = addr
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {value!r}")
            port = _int(parts[1].split("/", 1)[0], "m= port")
            if port > 65535:
                raise SdpError(f"bad m= port {port}")
            current = MediaDescription(media=parts[0].lower(), port=port, proto=parts[2], formats=parts[3:])
            media.append(current)
        elif kind == "a":
            name, _, attr = value.partition(":")
            if name in _DIRECTIONS:
                if current is None:
                    session_dir = name  # type: ignore[assignment]
                else:
                    current.direction = name  # type: ignore[assignment]
            elif name == "ptime":
                ptime = _int(attr.strip().split(".", 1)[0], "ptime")
                if current is None:
                    session_ptime = ptime
                else:
                    current.ptime = ptime
            elif name in ("rtpmap", "fmtp") and current is not None:
                pt_s, _, rest = attr.partition(" ")
                pt = _int(pt_s.strip(), name + " payload type")
                if name == "rtpmap":
                    enc = rest.strip().split("/")
                    if len(enc) < 2:
                        raise SdpError(f"bad rtpmap {attr!r}")
                    current.rtpmap[pt] = (enc[0], _int(enc[1], "clock rate"))
                else:
                    current.fmtp[pt] = rest.strip()
    if not origin:
        raise SdpError("missing o= line")
    return SessionDescription(
        origin=origin, connection=session_conn, direction=session_dir, ptime=session_ptime, media=media
    )


def _ptime(offered: int | None) -> int:
    if offered is None:
        return DEFAULT_PTIME_MS
    if offered not in PTIME_MS:
        log.info(
            "offered ptime %d ms is outside %d-%d ms: sending %d ms packets",
            offered,
            PTIME_MS.start,
            PTIME_MS.stop - 1,
            DEFAULT_PTIME_MS,
        )
        return DEFAULT_PTIME_MS
    return offered


def negotiate(offer: SessionDescription) -> Negotiation:
    """Pick the audio stream, codec (caller's order) and telephone-event PT; SdpNotAcceptable if none fits."""
    saw_audio = False
    for index, m in enumerate(offer.media):
        if m.media != "audio" or m.port == 0:
            continue
        saw_audio = True
        if m.proto.upper() != "RTP/AVP":
            continue
        chosen: tuple[CodecName, int] | None = None
        te_pt: int | None = None
        for fmt in m.formats:
            if not fmt.isdigit() or int(fmt) > 127:
                continue
            pt = int(fmt)
            if pt in m.rtpmap:
                name, rate = m.rtpmap[pt]
                found = by_name(name, rate)
            else:
                name, rate, found = "", 0, by_static_payload_type(pt)
            if chosen is None and found is not None:
                chosen = (found.name, pt)
            elif te_pt is None and name.upper() == "TELEPHONE-EVENT" and rate == 8000:
                if pt not in DYNAMIC_PAYLOAD_TYPES:
                    raise SdpNotAcceptable(f"telephone-event on payload type {pt}, not 96-127", warning_code=305)
                te_pt = pt
        if chosen is None:
            continue
        conn = m.connection or offer.connection
        if conn is None:
            raise SdpError("no c= line for the audio stream")
        media = MediaOffer(
            remote_ip=conn,
            remote_port=m.port,
            codec=chosen[0],
            payload_type=chosen[1],
            telephone_event_pt=te_pt,
            ptime=_ptime(m.ptime or offer.ptime),
            direction=m.direction or offer.direction or "sendrecv",
        )
        return Negotiation(offer=offer, media=media, index=index)
    if not saw_audio:
        raise SdpNotAcceptable("no audio stream offered", warning_code=304)
    names = " or ".join(c.name for c in CODECS)
    raise SdpNotAcceptable(f"no common codec: {names} over RTP/AVP required", warning_code=305)


def build_offer(
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    session_version: int,
    telephone_event_pt: int = 101,
    username: str = "voicenav",
) -> bytes:
    """Our offer, for INVITEs that came without one (the caller answers in its ACK): our codecs on
    their static payload types and telephone-event, 20 ms packets."""
    ip_ver = "IP6" if ":" in local_ip else "IP4"
    te = telephone_event_pt
    out = [
        "v=0",
        f"o={username} {session_id} {session_version} IN {ip_ver} {local_ip}",
        "s=voicenav",
        f"c=IN {ip_ver} {local_ip}",
        "t=0 0",
        f"m=audio {local_port} RTP/AVP {' '.join(str(c.payload_type) for c in CODECS)} {te}",
        *(f"a=rtpmap:{c.payload_type} {c.name}/{c.clock_rate}" for c in CODECS),
        f"a=rtpmap:{te} telephone-event/8000",
        f"a=fmtp:{te} 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(out) + "\r\n").encode()


def build_answer(
    neg: Negotiation,
    *,
    local_ip: str,
    local_port: int,
    session_id: int,
    session_version: int,
    username: str = "voicenav",
) -> bytes:
    """The RFC 3264 answer: one line per offered m=, ours for the accepted stream, port 0 for the rest."""
    ip_ver = "IP6" if ":" in local_ip else "IP4"
    out = [
        "v=0",
        f"o={username} {session_id} {session_version} IN {ip_ver} {local_ip}",
        "s=voicenav",
        f"c=IN {ip_ver} {local_ip}",
        "t=0 0",
    ]
    mo = neg.media
    for index, m in enumerate(neg.offer.media):
        if index != neg.index:
            out.append(f"m={m.media} 0 {m.proto} {m.formats[0]}")
            continue
        fmts = [str(mo.payload_type)]
        if mo.telephone_event_pt is not None:
            fmts.append(str(mo.telephone_event_pt))
        out.append(f"m=audio {local_port} RTP/AVP {' '.join(fmts)}")
        out.append(f"a=rtpmap:{mo.payload_type} {mo.codec}/{codec(mo.codec).clock_rate}")
        if mo.telephone_event_pt is not None:
            out.append(f"a=rtpmap:{mo.telephone_event_pt} telephone-event/8000")
            out.append(f"a=fmtp:{mo.telephone_event_pt} 0-15")
        out.append("a=ptime:20")
        out.append(f"a={_ANSWER_DIRECTION[mo.direction]}")
    return ("\r\n".join(out) + "\r\n").encode()
