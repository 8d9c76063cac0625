"""The SIP UAS core (RFC 3261 §8.2, §12-§16): admits calls, routes requests to transactions and
dialogs, answers OPTIONS, and sends our in-dialog requests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from prometheus_client import Counter
from pydantic import Field

from ivr.calls.admission import Admission, CallGate
from ivr.sip.access import SipAccess
from ivr.sip.call import CallEnded, IncomingCall, negotiate_body, refusal
from ivr.sip.config import SipParams
from ivr.sip.dialog import Dialog, new_branch, new_tag
from ivr.sip.message import (
    NameAddr,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    Via,
    format_hostport,
    make_response,
)
from ivr.sip.sdp import SdpError, SdpNotAcceptable
from ivr.sip.transaction import (
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    ServerTransaction,
    SipTimers,
    TransactionLayer,
)
from ivr.sip.transport import Peer, TcpTransport, Transport, UdpTransport

log = logging.getLogger(__name__)

SIP_REQUESTS = Counter("voicenav_sip_requests_total", "SIP requests received", ["method"])
SIP_RESPONSES = Counter("voicenav_sip_responses_total", "SIP responses sent (first transmissions)", ["code"])
SIP_PARSE_ERRORS = Counter(
    "voicenav_sip_parse_errors_total", "Unparseable SIP messages dropped or answered with 400", ["transport"]
)
SIP_REJECTED_CALLS = Counter("voicenav_sip_rejected_calls_total", "INVITEs refused", ["reason"])

_KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "INFO",
        "NOTIFY",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
        "UPDATE",
        "PRACK",
    }
)
# rejected-call reasons by the status refusing the INVITE's body, a 488 by its Warning code: an SDP that
# aims our RTP at an address we may not send to is not a codec problem, and alerts must tell them apart.
_BODY_REFUSALS = {400: "bad-sdp", 415: "unsupported-body"}
_NOT_ACCEPTABLE = {301: "media-address", 304: "no-audio", 305: "no-common-codec"}
_ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "NOTIFY")


def _body_refusal(exc: SdpError) -> str:
    """The `voicenav_sip_rejected_calls_total` reason of an INVITE refused for its body."""
    if isinstance(exc, SdpNotAcceptable):
        return _NOT_ACCEPTABLE[exc.warning_code]
    return _BODY_REFUSALS[exc.status]


class SipConfig(SipParams):
    """The settings plus what a server on its own decides (capacity, Retry-After, timers); a server given
    an admission uses that one's capacity and Retry-After."""

    max_calls: int = Field(100, ge=1)
    timers: SipTimers = SipTimers()
    retry_after: int = Field(30, ge=0)  # seconds, in 503s at capacity or while draining


OnCall = Callable[[IncomingCall], Awaitable[None]]


class SipServer:
    """Inbound-call SIP server.  `on_call(call)` runs once per admitted INVITE and owns the call for its
    whole life: when it returns (or raises), a call still in progress is released.

    `admission` decides which INVITEs become calls and counts them; without one the server admits
    against its own `max_calls` and `retry_after`."""

    def __init__(
        self, host: str, port: int, *, on_call: OnCall, admission: CallGate | None = None, **options: Any
    ) -> None:
        self.config = SipConfig(host=host, port=port, **options)
        self._on_call = on_call
        self._admission = admission or Admission(self.config.max_calls, self.config.retry_after)
        self._layer = TransactionLayer(self.config.timers)
        self._access = SipAccess(self.config.access)
        self._transports: dict[str, Transport] = {}
        self._dialogs: dict[tuple[str, str, str], IncomingCall] = {}
        self._calls: set[IncomingCall] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.bound_port = port

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        for attempt in range(10):
            try:
                await self._bind(self.config.port)
                return
            except OSError:
                await self._close_transports()
                if self.config.port != 0 or attempt == 9:
                    raise

    async def _bind(self, port: int) -> None:
        # with port 0 the first transport picks the port and the others must get the same one
        for name in self.config.transports:
            t: Transport = (
                UdpTransport(self._on_message, self._on_parse_error)
                if name == "udp"
                else TcpTransport(
                    self._on_message,
                    self._on_parse_error,
                    limits=self.config.tcp,
                    accept=self._access.source_allowed,
                )
            )
            self._transports[name] = t
            _, port = await t.start(self.config.host, port)
        self.bound_port = port
        log.info("SIP listening on %s:%d (%s)", self.config.host, port, ",".join(self.config.transports))

    async def stop(self) -> None:
        """Release every call (BYE, or 480 if unanswered), then close the transports."""
        self._admission.start_draining()
        hangups = [self.spawn(c.hangup("server-shutdown")) for c in list(self._calls)]
        if hangups:
            # a BYE response normally takes a round trip; don't wait for 64*T1 on dead peers
            await asyncio.wait(hangups, timeout=2 * self.config.timers.t1 + 1)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        self._layer.close()
        await self._close_transports()

    async def _close_transports(self) -> None:
        for t in self._transports.values():
            await t.close()
        self._transports.clear()

    async def drain(self) -> None:
        """Refuse new calls (503 + Retry-After) and return once the current ones have finished
        (bound it with asyncio.timeout; the server keeps draining either way)."""
        self._admission.start_draining()
        await self._idle.wait()

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    @property
    def ack_timeout(self) -> float:
        """How long an answered call waits for its ACK before it ends (admission caps RFC 3261's 64*T1)."""
        return min(self.config.timers.timeout, self.config.access.ack_timeout_s)

    @property
    def calls(self) -> list[IncomingCall]:
        return list(self._calls)

    # -- helpers for calls -------------------------------------------------------------------------

    @property
    def advertised_host(self) -> str:
        return self.config.public_host or self.config.host

    @property
    def allow(self) -> str:
        return ", ".join(_ALLOWED)

    def contact(self, transport: str) -> str:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"<sip:{format_hostport(self.advertised_host, self.bound_port)}{suffix}>"

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def count_rejected(self, reason: str) -> None:
        SIP_REJECTED_CALLS.labels(reason).inc()

    def respond(self, tx: ServerTransaction, response: SipResponse) -> None:
        SIP_RESPONSES.labels(str(response.status)).inc()
        tx.respond(response)  # type: ignore[attr-defined]

    def response_sender(self, request: SipRequest, peer: Peer) -> Send:
        """Where responses to `request` go: RFC 3261 §18.2.2 with RFC 3581 rport."""
        transport = self._transports.get(peer.transport)
        via = request.top_via
        received = via.params.get("received") or via.host
        rport = via.params.get("rport")
        if peer.transport == "tcp":
            host, port = received, int(rport) if rport else (via.port or 5060)
        elif rport:
            host, port = received, int(rport)
        else:
            host, port = received, via.port or 5060

        def send(data: bytes) -> None:
            if transport is not None:
                transport.send(data, host, port, peer.connection)

        return send

    def via(self, transport: str) -> Via:
        return Via(transport.upper(), self.advertised_host, self.bound_port, {"branch": new_branch(), "rport": None})

    def send_request(self, peer: Peer, request: SipRequest, next_hop: SipUri) -> NonInviteClientTransaction:
        name = peer.transport
        transport = self._transports[name]
        host, port = next_hop.params.get("maddr") or next_hop.host, next_hop.default_port
        if name == "tcp" and peer.connection is not None and peer.connection.open:
            conn = peer.connection

            def send(data: bytes) -> None:
                transport.send(data, host, port, conn)
        else:

            def send(data: bytes) -> None:
                transport.send(data, host, port)

        return self._layer.create_client(request, send, transport.reliable)

    def media_allowed(self, address: str, source: str) -> bool:
        return self._access.media_allowed(address, source)

    def call_ended(self, call: IncomingCall) -> None:
        if call in self._calls:
            self._calls.discard(call)
            self._admission.release("sip")
        self._dialogs.pop(call.dialog.key, None)
        if not self._calls:
            self._idle.set()

    # -- receiving ---------------------------------------------------------------------------------

    def _on_parse_error(self, exc: SipParseError, peer: Peer) -> None:
        SIP_PARSE_ERRORS.labels(peer.transport).inc()
        log.info("dropped unparseable SIP from %s:%d over %s: %s", peer.host, peer.port, peer.transport, exc.reason)

    def _on_message(self, msg: SipMessage, peer: Peer) -> None:
        if not self._access.source_allowed(peer.host):
            return  # unanswered: no reflection towards a forged source, nothing for a scanner to learn
        try:
            if isinstance(msg, SipResponse):
                tx = self._layer.match_response(msg)
                if tx is not None:
                    tx.on_response(msg)
                return
            self._on_request(msg, peer)
        except SipParseError as exc:
            self._on_parse_error(exc, peer)
        except Exception:
            # a bug handling one message must not take the transport (and every other call) down
            log.exception("error handling SIP message from %s:%d", peer.host, peer.port)

    def _on_request(self, req: SipRequest, peer: Peer) -> None:
        method = req.method if req.method in _KNOWN_METHODS else "other"
        SIP_REQUESTS.labels(method).inc()
        try:
            vias = req.vias
        except SipParseError as exc:
            self._on_parse_error(exc, peer)  # no Via: nowhere to send a response
            return
        top = vias[0]
        if top.host != peer.host or "rport" in top.params:
            top.params["received"] = peer.host
        if "rport" in top.params:
            top.params["rport"] = str(peer.port)  # RFC 3581 §4
        req.headers.replace("Via", [str(top), *(str(v) for v in vias[1:])])
        try:
            req.check()
        except SipParseError as exc:
            SIP_PARSE_ERRORS.labels(peer.transport).inc()
            if req.method != "ACK":
                self._stateless(req, peer, make_response(req, 400, f"Bad Request ({exc.reason})"))
            return

        if req.method == "ACK":
            stx = self._layer.match(req)
            if isinstance(stx, InviteServerTransaction):
                stx.on_ack()
                return
            call = self._dialogs.get(self._dialog_key(req))
            if call is not None:
                call.on_ack(req)
            return
        existing = self._layer.match(req)
        if existing is not None:
            existing.on_retransmission()
            return
        if req.method == "INVITE" and req.to.tag is None:
            denied = self._access.refuse_invite(req, peer.host)
            if denied is not None:
                # stateless: a retransmission is judged again, and a flood leaves no transactions behind
                SIP_REJECTED_CALLS.labels(f"admission-{denied.status}").inc()
                self._stateless(req, peer, denied)
                return
        reliable = self._transports[peer.transport].reliable
        send = self.response_sender(req, peer)
        tx = self._layer.create_server(req, send, reliable)
        if req.method == "INVITE":
            SIP_RESPONSES.labels("100").inc()
        try:
            self._dispatch(req, peer, tx)
        except SipParseError as exc:
            # a header only some methods need (Contact, Record-Route, ...) turned out malformed
            SIP_PARSE_ERRORS.labels(peer.transport).inc()
            if not tx.final_sent:
                self.respond(tx, make_response(req, 400, f"Bad Request ({exc.reason})"))
        except Exception:
            log.exception("error handling %s %s", req.method, req.call_id)
            if not tx.final_sent:
                self.respond(tx, make_response(req, 500))

    def _stateless(self, req: SipRequest, peer: Peer, response: SipResponse) -> None:
        SIP_RESPONSES.labels(str(response.status)).inc()
        self.response_sender(req, peer)(response.to_bytes())

    @staticmethod
    def _dialog_key(req: SipRequest) -> tuple[str, str, str]:
        return req.call_id, req.to.tag or "", req.from_.tag or ""

    def _dispatch(self, req: SipRequest, peer: Peer, tx: ServerTransaction) -> None:
        m = req.method
        if m not in _ALLOWED and m in _KNOWN_METHODS:
            self.respond(tx, make_response(req, 405, extra=[("Allow", self.allow)]))
            return
        if m not in _KNOWN_METHODS:
            self.respond(tx, make_response(req, 501, extra=[("Allow", self.allow)]))
            return
        if m == "CANCEL":
            self._on_cancel(req, tx)
            return
        mf = req.headers.get("Max-Forwards")
        if mf is not None and int(mf) == 0 and m != "OPTIONS":
            self.respond(tx, make_response(req, 483))
            return
        required = req.headers.values("Require")
        if required:
            self.respond(tx, make_response(req, 420, extra=[("Unsupported", ", ".join(required))]))
            return
        if not req.uri.lower().startswith(("sip:", "sips:")):
            self.respond(tx, make_response(req, 416))
            return
        if req.to.tag is None:
            if m == "INVITE":
                assert isinstance(tx, InviteServerTransaction)
                self._on_new_invite(req, peer, tx)
            elif m == "OPTIONS":
                self._on_options(req, tx)
            else:
                self.respond(tx, make_response(req, 481))
            return
        call = self._dialogs.get(self._dialog_key(req))
        if call is None:
            self.respond(tx, make_response(req, 481))
            return
        if not call.take_cseq(req.cseq[0]):
            self.respond(tx, make_response(req, 500, "Out of Order CSeq"))
            return
        if m == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            call.on_reinvite(req, tx)
        elif m == "BYE":
            self.respond(tx, make_response(req, 200))
            call.on_bye()
        elif m == "OPTIONS":
            self._on_options(req, tx)
        else:
            assert isinstance(tx, NonInviteServerTransaction)
            if m == "INFO":
                call.on_info(req, tx)
            else:
                call.on_notify(req, tx)

    def _on_options(self, req: SipRequest, tx: ServerTransaction) -> None:
        self.respond(
            tx,
            make_response(
                req,
                200,
                to_tag=new_tag(),
                extra=[
                    ("Allow", self.allow),
                    ("Accept", "application/sdp, application/dtmf-relay, message/sipfrag"),
                    ("Supported", ""),
                    ("Accept-Language", "en"),
                    ("Server", self.config.user_agent),
                ],
            ),
        )

    def _on_cancel(self, req: SipRequest, tx: ServerTransaction) -> None:
        invite_tx = self._layer.match_cancel(req)
        if invite_tx is None:
            self.respond(tx, make_response(req, 481))
            return
        self.respond(tx, make_response(req, 200))
        for call in self._calls:
            if call.invite_tx is invite_tx:
                call.on_cancel()
                return

    def _reject_invite(
        self,
        req: SipRequest,
        tx: ServerTransaction,
        status: int,
        reason: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        SIP_REJECTED_CALLS.labels(reason).inc()
        self.respond(tx, make_response(req, status, to_tag=new_tag(), extra=extra))

    def _on_new_invite(self, req: SipRequest, peer: Peer, tx: InviteServerTransaction) -> None:
        from_tag, cseq = req.from_.tag, req.cseq
        if any(
            c.call_id == req.call_id and c.dialog.remote_tag == from_tag and c.invite.cseq == cseq for c in self._calls
        ):
            # same request reached us again along another path (§8.2.2.2 merged request)
            self._reject_invite(req, tx, 482, "loop")
            return
        if req.headers.get("Content-Encoding"):
            self._reject_invite(req, tx, 415, "unsupported-body", [("Accept-Encoding", "identity")])
            return
        try:
            contact = NameAddr.parse(req.headers.get("Contact") or "")
            SipUri.parse(contact.uri)
        except SipParseError:
            self._reject_invite(req, tx, 400, "bad-request")
            return
        try:
            # no body: delayed offer, ours goes in the 2xx and the caller answers in the ACK
            neg = negotiate_body(req, lambda address: self.media_allowed(address, peer.host)) if req.body else None
        except SdpError as exc:
            SIP_REJECTED_CALLS.labels(_body_refusal(exc)).inc()
            self.respond(tx, refusal(req, exc, new_tag(), self.advertised_host))
            return
        # admitted last, so that an INVITE refused for what it says never takes a call's place
        refused = self._admission.admit("sip")
        if refused is not None:
            retry = [("Retry-After", str(self._admission.retry_after_s))]
            self._reject_invite(req, tx, 503, refused, retry)
            return
        local = req.to
        local.params["tag"] = new_tag()
        dialog = Dialog(
            call_id=req.call_id,
            local=local,
            remote=req.from_,
            remote_target=contact.uri,
            route_set=[NameAddr.parse(rr).uri for rr in req.headers.values("Record-Route")],
            remote_cseq=req.cseq[0],
        )
        call = IncomingCall(self, req, tx, peer, dialog, neg)
        self._dialogs[dialog.key] = call
        self._calls.add(call)
        self._idle.clear()
        self.spawn(self._run_call(call))

    async def _run_call(self, call: IncomingCall) -> None:
        failed = False
        try:
            await self._on_call(call)
        except CallEnded as exc:
            log.debug("call %s ended under its handler: %s", call.call_id, exc.reason)
        except Exception:
            failed = True
            log.exception("call handler failed for %s", call.call_id)
        finally:
            if call.state == "early" and failed:
                call.reject(500)
            elif not call.ended:
                await call.hangup("hangup")
