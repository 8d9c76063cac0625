"""SIP over UDP and TCP (RFC 3261 §18): receive and frame messages, send bytes to an address.

Each TCP connection has its own framer task: a stream that breaks framing is closed alone and
never disturbs other connections.  Parse failures are reported to `on_error` for counting.  TCP
connections are capped in number, and closed when silent for `idle_timeout_s` or when a message
takes longer than `message_timeout_s` to arrive in full (a peer trickling bytes to hold a slot).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from ivr.sip.message import (
    MAX_HEAD_BYTES,
    MAX_MESSAGE_BYTES,
    SipMessage,
    SipParseError,
    content_length,
    parse_message,
)

log = logging.getLogger(__name__)

TransportName = Literal["udp", "tcp"]

TCP_CLOSED = Counter(
    "voicenav_sip_tcp_closed_total", "SIP TCP connections we closed: refused, over the cap, idle, slow", ["reason"]
)


class TcpLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    max_connections: int = Field(256, ge=1, description="accepted connections at once; more are closed at once")
    # SBCs keep a connection they use alive with CRLF keep-alives (RFC 5626 §3.5.1), which count as traffic
    idle_timeout_s: float = Field(60.0, gt=0, description="a connection with no bytes this long is closed")
    message_timeout_s: float = Field(5.0, gt=0, description="the most a message may take from first to last byte")


@dataclass(frozen=True, slots=True, eq=False)
class Peer:
    """Where a message came from: transport, source address, and the TCP connection if any."""

    transport: TransportName
    host: str
    port: int
    connection: TcpConnection | None = None


OnMessage = Callable[[SipMessage, Peer], None]
OnError = Callable[[SipParseError, Peer], None]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UdpTransport(asyncio.DatagramProtocol):
    name: TransportName = "udp"
    reliable = False

    def __init__(self, on_message: OnMessage, on_error: OnError) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._family = socket.AF_INET

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        self._family = transport.get_extra_info("socket").family
        addr = transport.get_extra_info("sockname")
        return addr[0], addr[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        peer = Peer("udp", addr[0], addr[1])
        if not data.strip(b"\r\n"):
            return  # keep-alive
        try:
            msg = parse_message(data, datagram=True)
        except SipParseError as exc:
            self._on_error(exc, peer)
            return
        self._on_message(msg, peer)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    def send(self, data: bytes, host: str, port: int, connection: TcpConnection | None = None) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if _is_ip(host):
            self._transport.sendto(data, (host, port))
            return
        task = asyncio.get_running_loop().create_task(self._resolve_and_send(data, host, port))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve_and_send(self, data: bytes, host: str, port: int) -> None:
        try:
            # only addresses our socket can reach (an IPv4 socket cannot send to ::1)
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=self._family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return
        if infos and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, infos[0][4][:2])

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for t in list(self._tasks):
            t.cancel()


class TcpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        addr = writer.get_extra_info("peername")
        self.host: str = addr[0]
        self.port: int = addr[1]

    @property
    def open(self) -> bool:
        return not self.writer.is_closing()

    def send(self, data: bytes) -> None:
        if self.open:
            self.writer.write(data)

    def close(self) -> None:
        if self.open:
            self.writer.close()


class TcpTransport:
    name: TransportName = "tcp"
    reliable = True

    def __init__(
        self,
        on_message: OnMessage,
        on_error: OnError,
        *,
        limits: TcpLimits | None = None,
        accept: Callable[[str], bool] = lambda host: True,
    ) -> None:
        self._on_message = on_message
        self._on_error = on_error
        self._limits = limits or TcpLimits()
        self._accept_from = accept
        self._server: asyncio.Server | None = None
        self._connections: dict[tuple[str, int], TcpConnection] = {}
        self._accepted = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port)
        addr = self._server.sockets[0].getsockname()
        return addr[0], addr[1]

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = TcpConnection(reader, writer)
        if not self._accept_from(conn.host):
            TCP_CLOSED.labels("refused").inc()
            conn.close()
            return
        if self._accepted >= self._limits.max_connections:
            TCP_CLOSED.labels("over-cap").inc()
            # a flood would log a line per connection: the counter is what to alert on
            log.debug("SIP TCP connection from %s:%d closed: %d connections open", conn.host, conn.port, self._accepted)
            conn.close()
            return
        self._accepted += 1
        try:
            await self._serve(conn)
        finally:
            self._accepted -= 1

    async def _serve(self, conn: TcpConnection) -> None:
        key = (conn.host, conn.port)
        self._connections[key] = conn
        peer = Peer("tcp", conn.host, conn.port, conn)
        buf = bytearray()
        loop = asyncio.get_running_loop()
        message_deadline = 0.0  # when the message begun in `buf` must be complete
        try:
            while True:
                if buf:
                    wait, reason = message_deadline - loop.time(), "slow"
                else:
                    wait, reason = self._limits.idle_timeout_s, "idle"
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        chunk = await conn.reader.read(65536)
                except TimeoutError:
                    TCP_CLOSED.labels(reason).inc()
                    log.info("SIP TCP connection from %s:%d closed: %s", conn.host, conn.port, reason)
                    return
                if not chunk:
                    return
                if not buf:
                    message_deadline = loop.time() + self._limits.message_timeout_s
                buf += chunk
                while self._frame(buf, peer):
                    message_deadline = loop.time() + self._limits.message_timeout_s
        except SipParseError as exc:
            # framing is lost: nothing after this point can be delimited, so drop the connection
            self._on_error(exc, peer)
        except (ConnectionError, OSError):
            pass  # the peer reset or closed its connection: only this connection ends
        finally:
            self._connections.pop(key, None)
            conn.close()

    def _frame(self, buf: bytearray, peer: Peer) -> bool:
        """Cut one message off the front of `buf` and deliver it; False when more bytes are needed."""
        while buf[:2] == b"\r\n":
            del buf[:2]  # CRLF keep-alives between messages (RFC 5626 §3.5.1)
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise SipParseError("header section too large")
            return False
        clen = content_length(bytes(buf[:end]))
        if clen is None:
            raise SipParseError("missing Content-Length on a stream transport")
        total = end + 4 + clen
        if total > MAX_MESSAGE_BYTES:
            raise SipParseError("message too large")
        if len(buf) < total:
            return False
        data = bytes(buf[:total])
        del buf[:total]
        try:
            msg = parse_message(data, datagram=False)
        except SipParseError as exc:
            self._on_error(exc, peer)  # framing intact: skip this message, keep the connection
            return True
        self._on_message(msg, peer)
        return True

    def send(self, data: bytes, host: str, port: int, connection: TcpConnection | None = None) -> None:
        conn = connection
        if conn is None or not conn.open:
            conn = self._connections.get((host, port))
        if conn is not None and conn.open:
            conn.send(data)
            return
        self._spawn(self._connect_and_send(data, host, port))

    async def _connect_and_send(self, data: bytes, host: str, port: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, TimeoutError) as exc:
            log.warning("tcp connect to %s:%d failed: %s", host, port, exc)
            return
        conn = TcpConnection(reader, writer)
        conn.send(data)
        self._spawn(self._serve(conn))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            conn.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            await self._server.wait_closed()


Transport = UdpTransport | TcpTransport
