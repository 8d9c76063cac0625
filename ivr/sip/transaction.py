"""SIP transactions (RFC 3261 §17, with the INVITE "Accepted" state of RFC 6026).

Server transactions absorb request retransmissions and retransmit final responses over UDP;
the non-INVITE client transaction carries our in-dialog requests (BYE, REFER).  Timers come from
`SipTimers`, so tests can shrink T1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from ivr.sip.message import MAGIC_COOKIE, SipParseError, SipRequest, SipResponse, make_response

Send = Callable[[bytes], None]


class SipTimers(BaseModel):
    """RFC 3261 timer base values in seconds (Table 4)."""

    t1: float = Field(0.5, gt=0)
    t2: float = Field(4.0, gt=0)
    t4: float = Field(5.0, ge=0)

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L and the 2xx retransmission give-up."""
        return 64 * self.t1


TxKey = tuple[str, ...]


class PendingTimers:
    """The timers a transaction has started; all are cancelled together when it ends."""

    def __init__(self) -> None:
        self._handles: list[asyncio.TimerHandle] = []

    def start(self, delay: float, fn: Callable[[], None]) -> None:
        self._handles.append(asyncio.get_running_loop().call_later(delay, fn))

    def cancel(self) -> None:
        for h in self._handles:
            h.cancel()
        self._handles.clear()


def server_key(request: SipRequest) -> TxKey:
    """Transaction id of a request (§17.2.3); ACK and CANCEL map onto the INVITE they refer to
    when `as_invite` is wanted, see `TransactionLayer`."""
    via = request.top_via
    host, port = via.sent_by
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, host, str(port))
    # RFC 2543 peers: no unique branch, so the dialog-ish fields identify the transaction (§17.2.3)
    return ("2543", request.call_id, request.from_.tag or "", str(request.cseq[0]), host, str(port), branch)


class ServerTransaction:
    def __init__(
        self,
        request: SipRequest,
        send: Send,
        timers: SipTimers,
        reliable: bool,
        on_terminated: Callable[[ServerTransaction], None],
    ) -> None:
        self.request = request
        self._send = send
        self.timers = timers
        self.reliable = reliable
        self._on_terminated = on_terminated
        self.last_response: SipResponse | None = None
        self._pending = PendingTimers()
        self.terminated = False

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    def _transmit(self, response: SipResponse) -> None:
        self._send(response.to_bytes())

    def terminate(self) -> None:
        if self.terminated:
            return
        self.terminated = True
        self._pending.cancel()
        self._on_terminated(self)

    def resend(self) -> None:
        """Transmit the latest response again (the UAS core's 2xx retransmissions use this)."""
        if self.last_response is not None:
            self._transmit(self.last_response)

    def on_retransmission(self) -> None:
        """The same request again: repeat our latest response, if any (§17.2.1, §17.2.2)."""
        if self.last_response is not None:
            self._transmit(self.last_response)


class InviteServerTransaction(ServerTransaction):
    """proceeding -> accepted (2xx; RFC 6026) | completed (3xx-6xx) -> confirmed -> terminated."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        timers: SipTimers,
        reliable: bool,
        on_terminated: Callable[[ServerTransaction], None],
    ) -> None:
        super().__init__(request, send, timers, reliable, on_terminated)
        self.state: Literal["proceeding", "accepted", "completed", "confirmed", "terminated"] = "proceeding"
        # §17.2.1: answer at once so the caller's INVITE retransmissions stop
        self.respond(make_response(request, 100))

    def respond(self, response: SipResponse) -> None:
        if self.state != "proceeding":
            raise RuntimeError(f"INVITE transaction already {self.state}")
        self.last_response = response
        self._transmit(response)
        if response.status < 200:
            return
        if response.status < 300:
            # the UAS core retransmits the 2xx; this state only absorbs INVITE retransmissions (timer L)
            self.state = "accepted"
            self._pending.start(self.timers.timeout, self.terminate)
            return
        self.state = "completed"
        if not self.reliable:
            self._pending.start(self.timers.t1, lambda: self._timer_g(self.timers.t1))
        self._pending.start(self.timers.timeout, self._timer_h)

    def on_retransmission(self) -> None:
        if self.state in ("proceeding", "completed"):
            super().on_retransmission()

    def _timer_g(self, interval: float) -> None:
        if self.state != "completed" or self.last_response is None:
            return
        self._transmit(self.last_response)
        nxt = min(2 * interval, self.timers.t2)
        self._pending.start(nxt, lambda: self._timer_g(nxt))

    def _timer_h(self) -> None:
        if self.state == "completed":  # our final response was never acknowledged: give up
            self.state = "terminated"
            self.terminate()

    def on_ack(self) -> None:
        """ACK for our non-2xx final response."""
        if self.state != "completed":
            return
        self.state = "confirmed"
        self._pending.start(0 if self.reliable else self.timers.t4, self.terminate)


class NonInviteServerTransaction(ServerTransaction):
    """trying -> proceeding -> completed (timer J) -> terminated."""

    def respond(self, response: SipResponse) -> None:
        if self.final_sent:
            raise RuntimeError("final response already sent")
        self.last_response = response
        self._transmit(response)
        if response.status >= 200:
            self._pending.start(0 if self.reliable else self.timers.timeout, self.terminate)


class ClientTransactionTimeout(Exception):
    """No final response within 64*T1 (timer F)."""


class NonInviteClientTransaction:
    """Our in-dialog request; `response` resolves with the final response or ClientTransactionTimeout."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        timers: SipTimers,
        reliable: bool,
        on_terminated: Callable[[NonInviteClientTransaction], None],
    ) -> None:
        self.request = request
        self._send = send
        self.timers = timers
        self._on_terminated = on_terminated
        self.response: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._data = request.to_bytes()
        self._pending = PendingTimers()
        self._pending.start(timers.timeout, self._timer_f)
        self._proceeding = False
        self._send(self._data)
        if not reliable:
            self._pending.start(timers.t1, lambda: self._timer_e(timers.t1))

    @property
    def key(self) -> tuple[str, str]:
        return self.request.top_via.branch or "", self.request.method

    def _timer_e(self, interval: float) -> None:
        if self.response.done():
            return
        self._send(self._data)
        # §17.1.2.2: once a provisional response arrived, retransmit at T2
        nxt = self.timers.t2 if self._proceeding else min(2 * interval, self.timers.t2)
        self._pending.start(nxt, lambda: self._timer_e(nxt))

    def cancel(self) -> None:
        """Give up now (server shutdown): the waiter sees a timeout."""
        self._timer_f()

    def _timer_f(self) -> None:
        if not self.response.done():
            self.response.set_exception(ClientTransactionTimeout(self.request.method))
        self._finish()

    def on_response(self, response: SipResponse) -> None:
        if response.status < 200:
            self._proceeding = True
            return
        if not self.response.done():
            self.response.set_result(response)
        self._finish()

    def _finish(self) -> None:
        self._pending.cancel()
        self._on_terminated(self)


class TransactionLayer:
    """Transaction tables: matches requests and responses to the transactions that own them."""

    def __init__(self, timers: SipTimers) -> None:
        self.timers = timers
        self._server: dict[TxKey, ServerTransaction] = {}
        self._client: dict[tuple[str, str], NonInviteClientTransaction] = {}

    @staticmethod
    def _key(request: SipRequest, method: str) -> TxKey:
        return (*server_key(request), method)

    def match(self, request: SipRequest) -> ServerTransaction | None:
        """The server transaction a request belongs to (ACK -> its INVITE, §17.2.3), if any."""
        method = "INVITE" if request.method == "ACK" else request.method
        tx = self._server.get(self._key(request, method))
        if tx is None or request.method != "ACK":
            return tx
        # a 2xx ACK has its own branch; with RFC 2543 keys make sure it acknowledges a non-2xx
        return tx if tx.final_sent and tx.last_response and tx.last_response.status >= 300 else None

    def match_cancel(self, cancel: SipRequest) -> InviteServerTransaction | None:
        tx = self._server.get(self._key(cancel, "INVITE"))
        return tx if isinstance(tx, InviteServerTransaction) else None

    def create_server(self, request: SipRequest, send: Send, reliable: bool) -> ServerTransaction:
        key = self._key(request, request.method)
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(request, send, self.timers, reliable, lambda t: self._server.pop(key, None))
        else:
            tx = NonInviteServerTransaction(request, send, self.timers, reliable, lambda t: self._server.pop(key, None))
        self._server[key] = tx
        return tx

    def create_client(self, request: SipRequest, send: Send, reliable: bool) -> NonInviteClientTransaction:
        tx = NonInviteClientTransaction(request, send, self.timers, reliable, lambda t: self._client.pop(t.key, None))
        self._client[tx.key] = tx
        return tx

    def match_response(self, response: SipResponse) -> NonInviteClientTransaction | None:
        try:
            branch = response.top_via.branch or ""
            method = response.cseq[1]
        except SipParseError:
            return None
        return self._client.get((branch, method))

    def close(self) -> None:
        for stx in list(self._server.values()):
            stx.terminate()
        for ctx in list(self._client.values()):
            ctx.cancel()
