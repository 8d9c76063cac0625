"""A caller's RTP media over UDP (G.711 + RFC 4733), as an `ivr.media.MediaLeg`.

`RtpReceiver` is the pure receive pipeline (datagram -> RTCP/garbage filter -> RFC 4733 or jitter
buffer -> G.711 decode -> events); `RtpSession` puts it on an asyncio UDP socket with a playout
clock, and sends prompts as paced RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from asr_engine.audio.resample import resample_int16
from ivr.media.codecs import CODECS, CodecName, by_static_payload_type, codec
from ivr.media.dtmf import DtmfPayloadError, InbandDtmfDetector, Rfc4733Receiver
from ivr.media.events import AudioFrame, DtmfDigit, Hangup, MediaEvent
from ivr.media.jitterbuffer import JitterBuffer
from ivr.media.packetizer import RtpPacketizer
from ivr.media.rtp import RtpError, is_rtcp, parse_rtp

log = logging.getLogger(__name__)

RTP_PACKETS_IN = Counter(
    "voicenav_rtp_packets_received_total", "RTP datagrams received, by kind", ["kind"]
)  # kind: audio, dtmf, unknown_pt, rtcp, bad
RTP_BAD_PACKETS = Counter("voicenav_rtp_bad_packets_total", "Malformed RTP datagrams dropped", ["reason"])
RTP_PACKETS_OUT = Counter("voicenav_rtp_packets_sent_total", "RTP packets sent")
DTMF_DIGITS = Counter("voicenav_dtmf_digits_total", "DTMF digits received, by source", ["source"])
PLAYBACK_INTERRUPTIONS = Counter("voicenav_playback_interruptions_total", "Prompts cut short by stop_playback")
EVENTS_DROPPED = Counter("voicenav_media_events_dropped_total", "Media events dropped: the consumer fell behind")
RTP_REJECTED = Counter(
    "voicenav_rtp_rejected_total",
    "RTP datagrams ignored before decoding, by reason (foreign-source: not the negotiated or latched peer)",
    ["reason"],
)

SAMPLE_RATE = 8000


class RtpParameters(BaseModel):
    """What offer/answer negotiated for this call (and re-negotiates on a re-INVITE)."""

    model_config = ConfigDict(frozen=True)

    remote_host: str | None = None
    remote_port: int | None = Field(default=None, ge=1, le=65535)
    payload_type: int = Field(default=0, ge=0, le=127)
    codec: CodecName = "PCMU"
    telephone_event_pt: int | None = Field(default=101, ge=96, le=127)
    ptime_ms: int = Field(default=20, ge=10, le=60)

    @property
    def remote(self) -> tuple[str, int] | None:
        if self.remote_host is None or self.remote_port is None:
            return None
        return self.remote_host, self.remote_port


class RtpSessionConfig(BaseModel):
    """Local behaviour of every RTP session."""

    model_config = ConfigDict(frozen=True)

    bind_host: str = Field(default="127.0.0.1", description="address RTP sockets bind to")
    port_min: int | None = Field(default=None, ge=1024, le=65534, description="lowest RTP port; none: any free port")
    port_max: int | None = Field(default=None, ge=1024, le=65535, description="highest RTP port; none: any free port")
    # Off: media is taken only from the SDP address. On (NAT'd gateways): the first valid packet's source
    # and SSRC are latched and sent to; the negotiated address stays trusted, nobody else is ever taken.
    symmetric_rtp: bool = Field(
        default=False,
        description="latch onto the source and SSRC of the first valid RTP packet (callers behind NAT); "
        "off: media only from the address in the SDP",
    )
    inactivity_timeout: float | None = Field(
        default=30.0, gt=0, description="seconds without RTP before the call is hung up; none: never"
    )
    inband_dtmf: bool = Field(
        default=True, description="detect DTMF tones in the audio while no RFC 4733 event has been seen"
    )
    jitter_min_delay: float = Field(
        default=0.06,
        gt=0,
        le=1.0,
        description="shortest wait for a missing (late, reordered) packet before it is concealed (s); "
        "audio that arrives in order is never held",
    )
    jitter_max_delay: float = Field(
        default=0.2,
        gt=0,
        le=2.0,
        description="longest wait for a missing packet as the jitter estimate grows (s); also bounds the buffer",
    )
    max_queued_events: int = Field(
        default=1000, ge=10, description="media events queued per call (1000: 20 s of audio frames)"
    )

    @model_validator(mode="after")
    def _check(self) -> RtpSessionConfig:
        if (self.port_min is None) != (self.port_max is None):
            raise ValueError("port_min and port_max go together")
        if self.port_min is not None and self.port_max is not None and self.port_min > self.port_max:
            raise ValueError("port_min > port_max")
        if self.jitter_min_delay > self.jitter_max_delay:
            raise ValueError("jitter_min_delay > jitter_max_delay")
        return self


@dataclass(slots=True)
class ReceiveStats:
    audio: int = 0
    dtmf: int = 0
    unknown_pt: int = 0
    rtcp: int = 0
    bad: int = 0
    digits: int = 0


class RtpReceiver:
    """Pure receive side: feed datagrams as they arrive and call `tick` once per frame time."""

    def __init__(self, params: RtpParameters, config: RtpSessionConfig) -> None:
        self.params = params
        self.config = config
        self.stats = ReceiveStats()
        self.jitter = JitterBuffer(
            sample_rate=SAMPLE_RATE,
            frame_samples=SAMPLE_RATE * params.ptime_ms // 1000,
            min_delay=config.jitter_min_delay,
            max_delay=config.jitter_max_delay,
        )
        self._rfc4733 = Rfc4733Receiver()
        self._inband = InbandDtmfDetector(sample_rate=SAMPLE_RATE) if config.inband_dtmf else None
        self.rfc4733_seen = False

    def datagram(self, data: bytes, now: float) -> tuple[list[MediaEvent], bool]:
        """Events this datagram produces at once (RFC 4733 digits), and whether it was media RTP."""
        if is_rtcp(data):
            self._count("rtcp")
            return [], False
        try:
            pkt = parse_rtp(data)
        except RtpError as e:
            self._count("bad")
            RTP_BAD_PACKETS.labels(e.reason).inc()
            return [], False
        te_pt = self.params.telephone_event_pt
        if te_pt is not None and pkt.payload_type == te_pt:
            try:
                event = self._rfc4733.feed(pkt)
            except DtmfPayloadError:
                self._count("bad")
                RTP_BAD_PACKETS.labels("telephone-event").inc()
                return [], False
            self._count("dtmf")
            self.rfc4733_seen = True
            self.jitter.push_placeholder(pkt.sequence, pkt.timestamp, pkt.ssrc, now)
            if event is None:
                return [], True
            self.stats.digits += 1
            DTMF_DIGITS.labels("rfc4733").inc()
            return [DtmfDigit(event.digit, "rfc4733")], True
        negotiated = codec(self.params.codec) if pkt.payload_type == self.params.payload_type else None
        audio = negotiated or by_static_payload_type(pkt.payload_type)
        if audio is None:
            # Comfort noise, sipp's PT 97 "noop" packets, anything not negotiated: not audio.
            self._count("unknown_pt")
            self.jitter.push_placeholder(pkt.sequence, pkt.timestamp, pkt.ssrc, now)
            return [], False
        self._count("audio")
        self.jitter.push(pkt.sequence, pkt.timestamp, pkt.ssrc, audio.decode(pkt.payload), now)
        return [], True

    def rtcp_datagram(self, data: bytes) -> None:
        """A datagram on the RTCP port (RFC 3550 §11: RTP port + 1): counted, not interpreted."""
        if is_rtcp(data):
            self._count("rtcp")
        else:
            self._count("bad")
            RTP_BAD_PACKETS.labels("rtcp").inc()

    def tick(self, now: float) -> list[MediaEvent]:
        """The audio frames due now (in order, and silence for a stream that has stopped) and any
        in-band digits they complete. Called on every datagram and on a regular clock."""
        out: list[MediaEvent] = []
        while (frame := self.jitter.pop(now)) is not None:
            out.append(AudioFrame(frame.pcm, SAMPLE_RATE, frame.arrival))
            if self._inband is not None and not self.rfc4733_seen:
                for digit in self._inband.feed(frame.pcm):
                    self.stats.digits += 1
                    DTMF_DIGITS.labels("inband").inc()
                    out.append(DtmfDigit(digit, "inband"))
        return out

    def _count(self, kind: str) -> None:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        RTP_PACKETS_IN.labels(kind).inc()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_datagram = on_datagram
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a caller that went away; the inactivity timeout handles it.
        log.debug("rtp socket error: %s", exc)


class RtpSession:
    """One caller's RTP endpoint. Create with `await RtpSession.open(...)`."""

    def __init__(self, params: RtpParameters, config: RtpSessionConfig) -> None:
        self.config = config
        self.params = params
        self.receiver = RtpReceiver(params, config)
        self.packetizer = RtpPacketizer(SAMPLE_RATE)
        self.packets_sent = 0
        self._remote = params.remote
        self._latched: tuple[tuple[str, int], int] | None = None  # (source, SSRC) under symmetric RTP
        self.foreign_packets = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._rtcp: tuple[asyncio.DatagramTransport, _Protocol] | None = None
        self._events: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._hangup: Hangup | None = None
        self._playout: asyncio.Task[None] | None = None
        self._play_lock = asyncio.Lock()
        self._stop_gen = 0
        self._wake: asyncio.Future[None] | None = None
        self._last_rx = 0.0

    @classmethod
    async def open(cls, params: RtpParameters | None = None, config: RtpSessionConfig | None = None) -> RtpSession:
        self = cls(params or RtpParameters(), config or RtpSessionConfig())
        loop = asyncio.get_running_loop()
        rtp_sock, rtcp_sock = _bind(self.config)
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Protocol(self._on_datagram), sock=rtp_sock
            )
            self._transport, self._protocol = transport, protocol
            if rtcp_sock is not None:
                self._rtcp = await loop.create_datagram_endpoint(
                    lambda: _Protocol(lambda data, _addr: self.receiver.rtcp_datagram(data)), sock=rtcp_sock
                )
        except BaseException:
            await self.close("setup-failed")
            for sock in (rtp_sock, rtcp_sock):
                if sock is not None:
                    sock.close()
            raise
        self._last_rx = loop.time()
        self._playout = asyncio.create_task(self._playout_loop(), name=f"rtp-playout-{self.local_port}")
        return self

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    @property
    def rtcp_port(self) -> int | None:
        """The RTCP socket's port (RTP port + 1) when bound from a port range; else None (RTCP muxed)."""
        if self._rtcp is None:
            return None
        return int(self._rtcp[0].get_extra_info("sockname")[1])

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    def update(self, params: RtpParameters) -> None:
        """Apply a re-negotiation (re-INVITE): new remote address, codec or payload types."""
        if params.remote != self.params.remote:
            self._remote = params.remote
            self._latched = None
        self.params = params
        self.receiver.params = params
        self._last_rx = asyncio.get_running_loop().time()

    async def recv(self) -> MediaEvent:
        if self._events.empty() and self._hangup is not None:
            return self._hangup
        return await self._events.get()

    async def play(self, pcm: np.ndarray, sample_rate: int) -> bool:
        gen = self._stop_gen
        async with self._play_lock:
            if gen != self._stop_gen or self._hangup is not None:
                return False
            if self._remote is None:
                raise RuntimeError("no remote RTP address yet")
            if sample_rate == SAMPLE_RATE:
                samples = _to_8k(pcm, sample_rate)
            else:  # resampling a long prompt takes milliseconds: off the event loop
                samples = await asyncio.to_thread(_to_8k, pcm, sample_rate)
            step = SAMPLE_RATE * self.params.ptime_ms // 1000
            count = -(-len(samples) // step)
            samples = np.concatenate([samples, np.zeros(count * step - len(samples), np.int16)])
            loop = asyncio.get_running_loop()
            self.packetizer.start_talkspurt()
            start = loop.time()
            period = step / SAMPLE_RATE
            # Absolute deadlines (start + i * period), so scheduling delays never accumulate into drift.
            for i in range(count + 1):
                if not await self._sleep_until(start + i * period, gen):
                    PLAYBACK_INTERRUPTIONS.inc()
                    return False
                if i == count:
                    break  # the last packet's 20 ms have played out too
                self._send_frame(samples[i * step : (i + 1) * step], loop.time())
            return True

    def stop_playback(self) -> None:
        self._stop_gen += 1
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def close(self, reason: str) -> None:
        if self._hangup is None:
            self._hangup = Hangup(reason)
            self._events.put_nowait(self._hangup)
        self.stop_playback()
        if self._playout is not None:
            self._playout.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._playout
            self._playout = None
        if self._transport is not None and self._protocol is not None:
            self._transport.close()
            await self._protocol.closed  # the socket is released once the transport reports it lost
        if self._rtcp is not None:
            self._rtcp[0].close()
            await self._rtcp[1].closed

    async def _sleep_until(self, deadline: float, gen: int) -> bool:
        """Wait for `deadline` (loop clock); False at once if playback is stopped meanwhile."""
        loop = asyncio.get_running_loop()
        if gen != self._stop_gen:
            return False
        if deadline > loop.time():
            self._wake = loop.create_future()
            handle = loop.call_at(deadline, _resolve, self._wake)
            try:
                await self._wake
            finally:
                handle.cancel()
                self._wake = None
        return gen == self._stop_gen

    def _send_frame(self, frame: np.ndarray, now: float) -> None:
        if self._transport is None or self._remote is None or self._transport.is_closing():
            return
        payload = codec(self.params.codec).encode(frame)
        pkt = self.packetizer.packet(self.params.payload_type, payload, len(frame), now)
        self._transport.sendto(pkt.build(), self._remote)
        self.packets_sent += 1
        RTP_PACKETS_OUT.inc()

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._hangup is not None:
            return
        if not self._admit(data, addr):
            self.foreign_packets += 1
            RTP_REJECTED.labels("foreign-source").inc()
            return
        now = asyncio.get_running_loop().time()
        events, media = self.receiver.datagram(data, now)
        if media:
            self._last_rx = now
            events += self.receiver.tick(now)  # in-order audio goes on at once, not at the next tick
        for ev in events:
            self._emit(ev)

    def _admit(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Whether a datagram comes from the caller: the SDP address, or (symmetric RTP only) the source
        latched on the first valid packet. A stranger who sends first or mid-call is never heard."""
        negotiated = self.params.remote
        if negotiated is not None and _same_address(addr, negotiated):
            if self._latched is not None:
                self._latched, self._remote = None, negotiated  # the caller shows up where it said
            return True
        if not self.config.symmetric_rtp:
            return False
        if self._latched is not None:
            source, ssrc = self._latched
            return _same_address(addr, source) and (is_rtcp(data) or _rtp_ssrc(data) in (ssrc, None))
        identity = self._latch_candidate(data)
        if identity is None:
            return False  # RTCP, garbage or a payload type nobody negotiated: no reason to latch
        self._latched = ((addr[0], addr[1]), identity)
        self._remote = (addr[0], addr[1])
        log.info("rtp %s: latched onto %s:%s ssrc %08x", self.local_port, addr[0], addr[1], identity)
        return True

    def _latch_candidate(self, data: bytes) -> int | None:
        """The SSRC of a valid RTP packet with a negotiated payload type, else None."""
        if is_rtcp(data):
            return None
        try:
            pkt = parse_rtp(data)
        except RtpError:
            return None
        wanted = {self.params.payload_type, self.params.telephone_event_pt, *(c.payload_type for c in CODECS)}
        return pkt.ssrc if pkt.payload_type in wanted else None

    def _emit(self, ev: MediaEvent) -> None:
        if self._events.qsize() >= self.config.max_queued_events:
            self._events.get_nowait()
            EVENTS_DROPPED.inc()
        self._events.put_nowait(ev)

    async def _playout_loop(self) -> None:
        """The clock that conceals missing frames once overdue and keeps silence coming while the
        caller sends nothing; frames that arrive in order are passed on by `_on_datagram`."""
        loop = asyncio.get_running_loop()
        period = self.params.ptime_ms / 1000
        deadline = loop.time() + period
        while self._hangup is None:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            now = loop.time()
            timeout = self.config.inactivity_timeout
            if timeout is not None and now - self._last_rx > timeout:
                self._hangup = Hangup("rtp-timeout")
                self._events.put_nowait(self._hangup)
                return
            for ev in self.receiver.tick(now):
                self._emit(ev)
            deadline = max(deadline + period, now)  # after a stall: on from now, no burst of ticks


def _same_address(addr: tuple[str, int], expected: tuple[str, int]) -> bool:
    """Same port and host; IPv4-mapped IPv6 sources (dual-stack sockets) compare as IPv4."""
    if addr[1] != expected[1]:
        return False
    if addr[0] == expected[0]:
        return True  # the common case, without parsing addresses for every packet
    try:
        got, want = ipaddress.ip_address(addr[0]), ipaddress.ip_address(expected[0])
    except ValueError:
        return addr[0] == expected[0]  # a host name in the SDP: only an exact match
    if isinstance(got, ipaddress.IPv6Address) and got.ipv4_mapped is not None:
        got = got.ipv4_mapped
    if isinstance(want, ipaddress.IPv6Address) and want.ipv4_mapped is not None:
        want = want.ipv4_mapped
    return got == want


def _rtp_ssrc(data: bytes) -> int | None:
    """The SSRC field of an RTP header; None for a datagram too short to have one (counted as bad later)."""
    return int.from_bytes(data[8:12], "big") if len(data) >= 12 else None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _to_8k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    x = np.asarray(pcm)
    if x.ndim != 1 or x.dtype != np.int16:
        raise ValueError(f"mono int16 audio expected, got {x.dtype} with shape {x.shape}")
    return resample_int16(x, sample_rate, SAMPLE_RATE)


def _bind(config: RtpSessionConfig) -> tuple[socket.socket, socket.socket | None]:
    """An RTP socket, plus the RTCP one on the next port when a port range is configured."""
    family = socket.AF_INET6 if ":" in config.bind_host else socket.AF_INET
    if config.port_min is None or config.port_max is None:
        return _socket(family, config.bind_host, 0), None
    # Even RTP ports with RTCP on the odd port above (RFC 3550 §11), tried from a random start so
    # concurrent calls rarely collide.
    evens = list(range(config.port_min + config.port_min % 2, config.port_max, 2))
    if not evens:
        raise ValueError("no even/odd port pair in the configured range")
    first = random.randrange(len(evens))
    for port in evens[first:] + evens[:first]:
        try:
            rtp = _socket(family, config.bind_host, port)
        except OSError:
            continue
        try:
            return rtp, _socket(family, config.bind_host, port + 1)
        except OSError:
            rtp.close()
    raise OSError(f"no free RTP/RTCP port pair in {config.port_min}-{config.port_max}")


def _socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
