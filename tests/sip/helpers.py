"""Test helpers for the SIP tests: a server on an ephemeral loopback port, a raw UDP SIP client,
and a scripted caller that builds its side of a dialog."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ivr.sip import IncomingCall, SipServer, SipTimers
from ivr.sip.message import SipMessage, SipRequest, SipResponse, parse_message

OnCall = Callable[[IncomingCall], Awaitable[None]]


class RtpStandIn:
    """A bound UDP port that stands in for the RTP session's socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


async def answer_and_wait(call: IncomingCall, rtp_port: int) -> str:
    call.ringing()
    await call.answer("127.0.0.1", rtp_port)
    return await call.wait_ended()


@asynccontextmanager
async def running_server(on_call: OnCall, **options: Any) -> AsyncIterator[SipServer]:
    options.setdefault("timers", SipTimers(t1=0.05, t2=0.4, t4=0.2))
    server = SipServer("127.0.0.1", 0, on_call=on_call, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class UdpClient(asyncio.DatagramProtocol):
    """Minimal raw SIP-over-UDP endpoint: sends bytes, queues whatever comes back parsed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls) -> UdpClient:
        loop = asyncio.get_running_loop()
        proto = cls()
        transport, _ = await loop.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
        proto.transport = transport
        proto.port = transport.get_extra_info("sockname")[1]
        return proto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.queue.put_nowait(parse_message(data))

    def send(self, data: bytes | str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data.encode() if isinstance(data, str) else data, ("127.0.0.1", port))

    async def recv(self, within: float = 2.0) -> SipMessage:
        return await asyncio.wait_for(self.queue.get(), within)

    async def response(self, status: int | None = None, within: float = 2.0) -> SipResponse:
        """Next response (skipping 1xx unless `status` asks for one); requests are kept aside."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.queue.get()
                if not isinstance(msg, SipResponse):
                    continue
                if msg.status == status or (status is None and msg.status >= 200):
                    return msg

    async def request(self, method: str, within: float = 2.0) -> SipRequest:
        async with asyncio.timeout(within):
            while True:
                msg = await self.queue.get()
                if isinstance(msg, SipRequest) and msg.method == method:
                    return msg

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-16\r\n{extra}"
)


class Dialer:
    """Builds the caller's side of one call for the raw client."""

    def __init__(self, client: UdpClient, server_port: int) -> None:
        self.c = client
        self.server_port = server_port
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.to_tag = ""
        self.cseq = 1
        self.invite_branch = ""
        self.invite_cseq = 1

    def headers(self, method: str, branch: str, cseq: int, extra: str = "", via_port: int | None = None) -> str:
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        return (
            f"Via: SIP/2.0/UDP 127.0.0.1:{via_port or self.c.port};branch={branch};rport\r\n"
            f'From: "Bob" <sip:bob@127.0.0.1:{self.c.port}>;tag={self.tag}\r\n'
            f"To: <sip:ivr@127.0.0.1:{self.server_port}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:bob@127.0.0.1:{self.c.port}>\r\n{extra}"
        )

    def invite(
        self,
        sdp: str | None = None,
        extra: str = "",
        branch: str | None = None,
        content_type: str = "application/sdp",
        via_port: int | None = None,
        mutate: Callable[[str], str] = str,
    ) -> str:
        body = SDP.format(port=4000, extra="") if sdp is None else sdp
        self.invite_branch = branch or "z9hG4bK" + secrets.token_hex(6)
        self.invite_cseq = self.cseq
        ct = f"Content-Type: {content_type}\r\n" if body else ""
        msg = (
            f"INVITE sip:ivr@127.0.0.1:{self.server_port} SIP/2.0\r\n"
            + self.headers("INVITE", self.invite_branch, self.cseq, extra, via_port)
            + f"{ct}Content-Length: {len(body)}\r\n\r\n{body}"
        )
        msg = mutate(msg)
        self.c.send(msg, self.server_port)
        return msg

    def request(
        self, method: str, extra: str = "", body: str = "", cseq: int | None = None, branch: str | None = None
    ) -> str:
        if cseq is None and method not in ("ACK", "CANCEL"):
            self.cseq += 1
        msg = (
            f"{method} sip:ivr@127.0.0.1:{self.server_port} SIP/2.0\r\n"
            + self.headers(method, branch or "z9hG4bK" + secrets.token_hex(6), cseq or self.cseq, extra)
            + f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.c.send(msg, self.server_port)
        return msg

    def ack(self, cseq: int | None = None) -> None:
        self.request("ACK", cseq=cseq or self.invite_cseq)

    async def establish(self, sdp: str | None = None) -> SipResponse:
        self.invite(sdp)
        ok = await self.c.response(200)
        self.to_tag = ok.to.tag or ""
        self.ack()
        return ok


def respond(
    client: UdpClient, request: SipRequest, status: int, reason: str, server_port: int, extra: str = "", body: str = ""
) -> None:
    h = "".join(f"{n}: {v}\r\n" for n, v in request.headers.items() if n in ("Via", "From", "To", "Call-ID", "CSeq"))
    head = f"SIP/2.0 {status} {reason}\r\n{h}{extra}"
    client.send(f"{head}Content-Length: {len(body)}\r\n\r\n{body}", server_port)
