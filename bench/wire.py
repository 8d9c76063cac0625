"""A wire tap for the turns benchmark: a stateless SIP relay over UDP that puts itself in the media path
of every call and timestamps every RTP packet both ways, in its own process (so the server's load does
not shift the clock readings).

    .venv/bin/python -m bench.wire --listen 127.0.0.1:PORT --server 127.0.0.1:SIP_PORT --out packets.tsv

Callers (sipp) send SIP to --listen. Requests go on to the server with the relay's Via on top; the
server's responses come back through it (the Via) and go to the caller without it. The SDP of the
INVITE and of its answer are rewritten so that both sides send RTP to one relay socket per call, which
forwards each packet to the other side. The server's own requests (BYE) go to the caller's Contact,
past the relay (they carry no media); the caller's answers to them come to the relay and go on to the
server.

On SIGTERM or SIGINT it writes one line per RTP packet to --out: monotonic time (s), caller (the From
user), direction (c2s or s2c), payload type, RMS of the G.711 μ-law payload (0 for other types).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr_engine.audio.g711 import ulaw_decode

PCMU = 0
_RTP_HEADER = 12


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def rtp_payload(packet: bytes) -> tuple[int, bytes] | None:
    """(payload type, payload) of an RTP packet; None for anything else."""
    if len(packet) < _RTP_HEADER or packet[0] >> 6 != 2:
        return None
    offset = _RTP_HEADER + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension: 4-byte header, then its length in words
        if len(packet) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)  # padding
    return packet[1] & 0x7F, packet[offset:end]


def rms(pt: int, payload: bytes) -> float:
    if pt != PCMU or not payload:
        return 0.0
    x = ulaw_decode(payload).astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


@dataclass
class _Call:
    caller: str
    media: asyncio.DatagramTransport | None = None
    port: int = 0
    caller_rtp: tuple[str, int] | None = None  # from the INVITE's SDP; then where its RTP comes from
    server_rtp: tuple[str, int] | None = None  # from the answer's SDP


@dataclass
class Tap:
    server: tuple[str, int]
    host: str
    packets: list[tuple[float, str, str, int, float]] = field(default_factory=list)
    calls: dict[str, _Call] = field(default_factory=dict)  # by Call-ID
    callers: dict[str, tuple[str, int]] = field(default_factory=dict)  # Call-ID -> caller's SIP address
    sip: asyncio.DatagramTransport | None = None
    port: int = 0

    async def media_for(self, call: _Call) -> int:
        if call.media is None:
            loop = asyncio.get_running_loop()
            call.media, _ = await loop.create_datagram_endpoint(lambda: _Media(self, call), local_addr=(self.host, 0))
            call.port = call.media.get_extra_info("sockname")[1]
        return call.port

    async def sip_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.sip is not None
        head, sep, body = data.partition(b"\r\n\r\n")
        text = head.decode("utf-8", "replace")
        call_id = _header(text, "Call-ID", "i")
        if text.startswith("SIP/2.0") and addr != self.server:
            # The caller's answer to the server's own request (BYE): sipp sends everything to the
            # address it dials, whatever the Via says.
            self.sip.sendto(data, self.server)
            return
        if not text.startswith("SIP/2.0"):  # a caller's request: on to the server
            self.callers[call_id] = addr
            call = self.calls.get(call_id)
            if call is None:
                user = re.search(r"(?im)^(?:From|f)\s*:[^\n]*?sip:([^@>;]+)@", text)
                call = self.calls[call_id] = _Call(user.group(1) if user else call_id)
            if body and re.search(r"(?m)^m=audio ", body.decode()):
                port = await self.media_for(call)
                call.caller_rtp, body = _rewrite_sdp(body, self.host, port)
            first, _, rest = text.partition("\r\n")
            branch = re.search(r"branch=([^;,\s]+)", rest)
            ours = "z9hG4bK" + hashlib.sha1((branch.group(1) if branch else first).encode()).hexdigest()[:16]
            text = f"{first}\r\nVia: SIP/2.0/UDP {self.host}:{self.port};branch={ours}\r\n{rest}"
            self.sip.sendto(_with_length(text, body), self.server)
            return
        # A response from the server: drop our Via and pass it to the caller.
        text = re.sub(r"(?im)^(?:Via|v)\s*:[^\r\n]*\r\n", "", text, count=1)
        call = self.calls.get(call_id)
        if call is not None and body and re.search(r"(?m)^m=audio ", body.decode()):
            port = await self.media_for(call)
            call.server_rtp, body = _rewrite_sdp(body, self.host, port)
        caller = self.callers.get(call_id)
        if caller is not None:
            self.sip.sendto(_with_length(text, body) if sep else data, caller)

    def media_received(self, call: _Call, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        assert call.media is not None
        if addr == call.server_rtp:
            direction, to = "s2c", call.caller_rtp
        else:
            direction, to = "c2s", call.server_rtp
            call.caller_rtp = addr  # answer where the caller's RTP comes from, as the server does
        parsed = rtp_payload(data)
        if parsed is not None:
            pt, payload = parsed
            self.packets.append((now, call.caller, direction, pt, rms(pt, payload)))
        if to is not None:
            call.media.sendto(data, to)

    def write(self, out: Path) -> None:
        lines = (f"{t:.6f}\t{c}\t{d}\t{pt}\t{r:.1f}\n" for t, c, d, pt, r in self.packets)
        out.write_text("".join(lines))


def _header(text: str, name: str, compact: str) -> str:
    found = re.search(rf"(?im)^(?:{name}|{compact})\s*:\s*(\S+)", text)
    return found.group(1) if found else ""


def _rewrite_sdp(body: bytes, host: str, port: int) -> tuple[tuple[str, int], bytes]:
    """The SDP's audio address, and the SDP with the relay's address in its place."""
    sdp = body.decode()
    conn = re.search(r"(?m)^c=IN IP4 (\S+)", sdp)
    audio = re.search(r"(?m)^m=audio (\d+)", sdp)
    assert conn is not None and audio is not None, sdp
    original = (conn.group(1), int(audio.group(1)))
    sdp = re.sub(r"(?m)^c=IN IP4 \S+", f"c=IN IP4 {host}", sdp)
    sdp = re.sub(r"(?m)^m=audio \d+", f"m=audio {port}", sdp)
    return original, sdp.encode()


def _with_length(head: str, body: bytes) -> bytes:
    head = re.sub(r"(?im)^(Content-Length|l)\s*:\s*\d+", f"Content-Length: {len(body)}", head)
    return head.encode() + b"\r\n\r\n" + body


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.tasks: set[asyncio.Task[None]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        task = asyncio.create_task(self.tap.sip_received(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _Media(asyncio.DatagramProtocol):
    def __init__(self, tap: Tap, call: _Call) -> None:
        self.tap, self.call = tap, call

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.tap.media_received(self.call, data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # a side that has gone away (ICMP port unreachable): the other side's packets still count


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True, help="host:port callers send SIP to")
    ap.add_argument("--server", required=True, help="host:port of the server's SIP (UDP)")
    ap.add_argument("--out", type=Path, required=True, help="packet log written on SIGTERM/SIGINT")
    args = ap.parse_args()
    host, port = _addr(args.listen)
    tap = Tap(_addr(args.server), host)
    loop = asyncio.get_running_loop()
    tap.sip, _ = await loop.create_datagram_endpoint(lambda: _Sip(tap), local_addr=(host, port))
    tap.port = port
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    tap.write(args.out)


if __name__ == "__main__":
    asyncio.run(main())
