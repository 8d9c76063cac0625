"""Fixtures for the SIP tests: a server on an ephemeral loopback port and a raw UDP SIP client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

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


@pytest.fixture
def rtp_port() -> Any:
    r = RtpStandIn()
    yield r.port
    r.close()


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

    async def recv(self, timeout: float = 2.0) -> SipMessage:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def response(self, status: int | None = None, timeout: float = 2.0) -> SipResponse:
        """Next response (skipping 1xx unless `status` asks for one); requests are kept aside."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.queue.get()
                if isinstance(msg, SipResponse) and (status is None and msg.status >= 200 or msg.status == status):
                    return msg

    async def request(self, method: str, timeout: float = 2.0) -> SipRequest:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.queue.get()
                if isinstance(msg, SipRequest) and msg.method == method:
                    return msg

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@pytest.fixture
async def udp_client() -> AsyncIterator[UdpClient]:
    client = await UdpClient.open()
    yield client
    client.close()
