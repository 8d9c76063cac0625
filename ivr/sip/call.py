"""One inbound call as the application sees it: ring, answer, hang up, transfer, follow media changes.

The UAS core feeds the call the requests of its dialog; everything that decides what happens to the
call from the SIP side (2xx retransmission until ACK, re-INVITE answers, REFER progress) and the
dialog's state live here. What the call needs from the core in return is `CallHost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol

from ivr.media.events import DtmfDigit
from ivr.sip.dialog import Dialog
from ivr.sip.message import NameAddr, SipParseError, SipRequest, SipResponse, SipUri, Via, make_response
from ivr.sip.sdp import (
    MediaOffer,
    Negotiation,
    SdpError,
    SdpNotAcceptable,
    UnsupportedBody,
    build_answer,
    build_offer,
    negotiate,
    parse_sdp,
)
from ivr.sip.transaction import (
    ClientTransactionTimeout,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
    SipTimers,
)
from ivr.sip.transport import Peer

log = logging.getLogger(__name__)

CallState = Literal["early", "answering", "confirmed", "ended"]
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_NUMERIC_EVENTS = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}  # RFC 4733 event codes


class CallEnded(Exception):
    """The call ended before the operation could complete; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallHostConfig(Protocol):
    """The settings of the UAS core a call follows."""

    @property
    def user_agent(self) -> str: ...

    @property
    def timers(self) -> SipTimers: ...

    @property
    def transfer_timeout(self) -> float: ...

    @property
    def transfer_fallback(self) -> Literal["keep", "hangup", "hangup-with-reason"]: ...


class CallHost(Protocol):
    """What a call needs from the UAS core that feeds it its requests."""

    @property
    def config(self) -> CallHostConfig: ...

    @property
    def advertised_host(self) -> str: ...

    @property
    def allow(self) -> str: ...

    def contact(self, transport: str) -> str: ...

    def via(self, transport: str) -> Via:
        """A top Via, with a new branch, for a request we send over `transport`."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    def respond(self, tx: ServerTransaction, response: SipResponse) -> None: ...

    def send_request(self, peer: Peer, request: SipRequest, next_hop: SipUri) -> NonInviteClientTransaction:
        """Send an in-dialog request towards `next_hop` (over `peer`'s connection where it still holds)."""
        ...

    def count_rejected(self, reason: str) -> None: ...

    def media_allowed(self, address: str, source: str) -> bool:
        """May SDP that came from `source` have our RTP sent to `address`?"""
        ...

    def call_ended(self, call: IncomingCall) -> None: ...


def _warning(code: int, host: str, text: str) -> tuple[str, str]:
    return "Warning", f'{code} {host} "{text}"'


def negotiate_body(request: SipRequest, media_allowed: Callable[[str], bool]) -> Negotiation:
    """The negotiated media for the SDP offer (or answer) in `request`; raises an `SdpError`, also when
    `media_allowed` refuses the address the caller wants our RTP sent to."""
    if request.content_type != "application/sdp":
        raise UnsupportedBody(f"unsupported content type {request.content_type!r}")
    neg = negotiate(parse_sdp(request.body))
    if not media_allowed(neg.media.remote_ip):
        raise SdpNotAcceptable(f"media address {neg.media.remote_ip} is not the signalling source", warning_code=301)
    return neg


def refusal(request: SipRequest, exc: SdpError, to_tag: str, host: str) -> SipResponse:
    """The response refusing `request` for its body: the error's status, with the header it calls for."""
    extra: list[tuple[str, str]] = []
    if isinstance(exc, SdpNotAcceptable):
        extra.append(_warning(exc.warning_code, host, exc.reason))
    elif isinstance(exc, UnsupportedBody):
        extra.append(("Accept", "application/sdp"))
    return make_response(request, exc.status, to_tag=to_tag, extra=extra)


class IncomingCall:
    """An inbound INVITE and the dialog it creates.

    Attributes for the application: `call_id`, `from_uri`, `to_uri`, `request_uri`, `caller_display`,
    `caller_user`, `media` (the current negotiated `MediaOffer`), `state`, `end_reason`,
    `on_media_change(MediaOffer)` and `on_dtmf(DtmfDigit)` callbacks (set them before answering).
    """

    def __init__(
        self,
        server: CallHost,
        invite: SipRequest,
        tx: InviteServerTransaction,
        peer: Peer,
        dialog: Dialog,
        negotiation: Negotiation | None,
    ) -> None:
        self._server = server
        self.invite = invite
        self.invite_tx = tx
        self.peer = peer
        self.dialog = dialog
        self._neg = negotiation
        # None only for an INVITE without SDP (delayed offer) until answer() has returned
        self.media: MediaOffer | None = negotiation.media if negotiation else None
        frm, to = invite.from_, invite.to
        self.call_id = dialog.call_id
        self.from_uri = frm.uri
        self.to_uri = to.uri
        self.request_uri = invite.uri
        self.caller_display = frm.display
        try:
            self.caller_user: str | None = frm.sip_uri().user
        except SipParseError:
            self.caller_user = None
        self.state: CallState = "early"
        self.end_reason: str | None = None
        self.transfer_failure: tuple[str, str] | None = None  # (target, cause) of the last failed REFER
        self.on_media_change: Callable[[MediaOffer], None] | None = None
        self.on_dtmf: Callable[[DtmfDigit], None] | None = None
        loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[str] = loop.create_future()
        self._acked: asyncio.Future[None] = loop.create_future()
        self._session_id = secrets.randbelow(2**31)
        self._session_version = secrets.randbelow(2**20)
        self._local: tuple[str, int] | None = None
        self._pending_ack: int | None = None  # CSeq of the INVITE whose 2xx awaits its ACK
        self._offer_in_2xx = False  # our 2xx carried an offer (offer-less re-INVITE): answer is in the ACK
        self._timers: list[asyncio.TimerHandle] = []
        self._refer_result: asyncio.Future[tuple[bool, str]] | None = None

    # -- application API --------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    async def wait_ended(self) -> str:
        """Wait until the call is over; returns the reason (bye, cancel, ack-timeout, hangup, ...)."""
        return await asyncio.shield(self._ended)

    def ringing(self) -> None:
        """Send 180 Ringing (early dialog)."""
        if self.state == "early":
            self._respond_invite(self._dialog_response(self.invite, 180))

    async def answer(self, local_ip: str, local_port: int) -> None:
        """Send 200 OK with our SDP answer (RTP at local_ip:local_port) and wait for the ACK.
        For an INVITE without SDP the 200 carries our offer and the ACK the caller's answer, which
        sets `media`.  Raises CallEnded if the call ends first (CANCEL, BYE, no ACK within the
        server's `ack_timeout`, no usable answer in the ACK)."""
        if self.state != "early":
            raise CallEnded(self.end_reason or f"cannot answer in state {self.state}")
        self._local = (local_ip, local_port)
        if self._neg is None:
            body = build_offer(
                local_ip=local_ip,
                local_port=local_port,
                session_id=self._session_id,
                session_version=self._session_version,
            )
            self._offer_in_2xx = True
        else:
            body = build_answer(
                self._neg,
                local_ip=local_ip,
                local_port=local_port,
                session_id=self._session_id,
                session_version=self._session_version,
            )
        response = self._dialog_response(self.invite, 200, body=body)
        self.state = "answering"
        self._send_2xx(self.invite_tx, response)
        await asyncio.wait({self._acked, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if not self._acked.done():
            raise CallEnded(self.end_reason or "ended")

    def reject(self, code: int = 486, reason: str | None = None) -> None:
        """Refuse the call with a final 3xx-6xx response (only before answering)."""
        if not 300 <= code <= 699:
            raise ValueError("reject needs a 3xx-6xx status")
        if self.state != "early":
            return
        self._respond_invite(make_response(self.invite, code, reason, to_tag=self.dialog.local_tag))
        self._server.count_rejected("application")
        self._end("rejected")

    async def hangup(self, reason: str = "hangup", *, cause: str | None = None) -> None:
        """End the call: reject it if not yet answered, else BYE (after the ACK, §15).  `reason` becomes
        `end_reason`; `cause` goes into a Reason header of the BYE (RFC 3326)."""
        if self.state == "early":
            self._respond_invite(make_response(self.invite, 480, to_tag=self.dialog.local_tag))
            self._end(reason)
            return
        if self.state == "answering":
            await asyncio.wait({self._acked, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        if self.state != "confirmed":
            return
        self._end(reason)
        await self._send_bye(cause)

    async def transfer(self, target_uri: str) -> bool:
        """Blind transfer with REFER (RFC 3515).  True when the NOTIFY reports a 2xx: the call is then
        released with BYE.  False on 4xx-6xx, a failed sipfrag or a timeout; `transfer_failure`
        then records (target, cause) and the server's `transfer_fallback` decides: "keep" leaves the
        call up for the application's own fallback, "hangup" / "hangup-with-reason" release it with
        a BYE (the latter with a Reason header)."""
        if self.state != "confirmed":
            return False
        loop = asyncio.get_running_loop()
        self._refer_result = loop.create_future()
        local_uri = self.dialog.local.uri
        tx = self._send_request("REFER", [("Refer-To", f"<{target_uri}>"), ("Referred-By", f"<{local_uri}>")])
        ok, cause = False, "timeout"
        try:
            async with asyncio.timeout(self._server.config.transfer_timeout):
                response = await tx.response
                if response.status >= 300:
                    cause = f"{response.status} {response.reason}"
                else:
                    ok, cause = await asyncio.shield(self._refer_result)
        except (TimeoutError, ClientTransactionTimeout):
            cause = "timeout"
        finally:
            self._refer_result = None
        if self.state != "confirmed":
            return ok
        if ok:
            self._end("transferred")
            await self._send_bye(None)
            return True
        self.transfer_failure = (target_uri, cause)
        log.info("transfer of %s to %s failed: %s", self.call_id, target_uri, cause)
        fallback = self._server.config.transfer_fallback
        if fallback != "keep":
            self._end("transfer-failed")
            text = f"transfer to {target_uri} failed: {cause}".replace('"', "'")
            await self._send_bye(f'SIP;cause=480;text="{text}"' if fallback == "hangup-with-reason" else None)
        return False

    # -- called by the UAS core --------------------------------------------------------------------

    def take_cseq(self, cseq: int) -> bool:
        """§12.2.2: a request of the caller with a CSeq below the last one is out of order (False);
        otherwise its CSeq becomes the last one."""
        if cseq < self.dialog.remote_cseq:
            return False
        self.dialog.remote_cseq = cseq
        return True

    def on_ack(self, ack: SipRequest) -> None:
        if self._pending_ack is None or ack.cseq[0] != self._pending_ack:
            return
        self._pending_ack = None
        self._cancel_timers()
        if self.state == "answering":
            self.state = "confirmed"
        if self._offer_in_2xx:
            self._offer_in_2xx = False
            try:
                self._set_media(negotiate_body(ack, self._media_allowed))
            except SdpError as exc:
                log.warning("call %s: no usable SDP answer in the ACK (%s)", self.call_id, exc.reason)
                self._end("bad-sdp")
                self._server.spawn(self._send_bye(None))
                return
        if not self._acked.done():
            self._acked.set_result(None)

    def on_cancel(self) -> None:
        if self.state == "early":
            self._respond_invite(make_response(self.invite, 487, to_tag=self.dialog.local_tag))
            self._end("cancel")

    def on_bye(self) -> None:
        if self.invite_tx.state == "proceeding":
            self._respond_invite(make_response(self.invite, 487, to_tag=self.dialog.local_tag))
        self._end("bye")

    def on_reinvite(self, request: SipRequest, tx: InviteServerTransaction) -> None:
        if self.state != "confirmed" or self._pending_ack is not None:
            # §14.2: an INVITE while another is still pending in this dialog
            self._server.respond(
                tx,
                make_response(
                    request, 500, to_tag=self.dialog.local_tag, extra=[("Retry-After", str(random.randint(1, 10)))]
                ),
            )
            return
        contact = request.headers.get("Contact")
        if contact:
            with contextlib.suppress(SipParseError):
                self.dialog.remote_target = _contact_uri(contact)
        assert self._local is not None  # confirmed implies answered
        if not request.body:
            # offer-less re-INVITE: our 2xx carries an offer, the caller's answer comes in the ACK
            self._session_version += 1
            body = build_offer(
                local_ip=self._local[0],
                local_port=self._local[1],
                session_id=self._session_id,
                session_version=self._session_version,
            )
            self._offer_in_2xx = True
            self._send_2xx(tx, self._dialog_response(request, 200, body=body))
            return
        try:
            neg = negotiate_body(request, self._media_allowed)
        except SdpError as exc:
            self._server.respond(tx, refusal(request, exc, self.dialog.local_tag, self._server.advertised_host))
            return
        self._session_version += 1
        body = build_answer(
            neg,
            local_ip=self._local[0],
            local_port=self._local[1],
            session_id=self._session_id,
            session_version=self._session_version,
        )
        self._send_2xx(tx, self._dialog_response(request, 200, body=body))
        self._set_media(neg)

    def on_info(self, request: SipRequest, tx: NonInviteServerTransaction) -> None:
        ctype = request.content_type
        digit: str | None = None
        if ctype == "application/dtmf-relay":
            for line in request.body.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip().upper()
                    digit = _NUMERIC_EVENTS.get(digit, digit)
        elif ctype == "application/dtmf":
            digit = request.body.decode("utf-8", "replace").strip().upper()
        elif request.body:
            self._server.respond(
                tx, make_response(request, 415, extra=[("Accept", "application/dtmf-relay, application/dtmf")])
            )
            return
        if digit is not None and digit not in _DTMF_DIGITS:
            self._server.respond(tx, make_response(request, 400, "Bad DTMF Signal"))
            return
        self._server.respond(tx, make_response(request, 200))
        if digit is not None and self.on_dtmf is not None:
            self.on_dtmf(DtmfDigit(digit=digit, source="sip-info"))

    def on_notify(self, request: SipRequest, tx: NonInviteServerTransaction) -> None:
        self._server.respond(tx, make_response(request, 200))
        fut = self._refer_result
        if fut is None or fut.done():
            return
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            return
        status = _sipfrag_status(request.body) if request.content_type == "message/sipfrag" else None
        if status is not None and status >= 200:
            fut.set_result((status < 300, f"NOTIFY sipfrag {status}"))
        elif (request.headers.get("Subscription-State") or "").lower().startswith("terminated"):
            fut.set_result((False, "subscription terminated without a final status"))

    # -- internals ---------------------------------------------------------------------------------

    def _media_allowed(self, address: str) -> bool:
        return self._server.media_allowed(address, self.peer.host)

    def _set_media(self, neg: Negotiation) -> None:
        self._neg = neg
        changed = neg.media != self.media
        self.media = neg.media
        if changed and self.on_media_change is not None:
            self.on_media_change(neg.media)

    def _dialog_response(self, request: SipRequest, status: int, body: bytes = b"") -> SipResponse:
        extra = [("Contact", self._server.contact(self.peer.transport))]
        extra += [("Record-Route", rr) for rr in request.headers.raw("Record-Route")]
        if status >= 200:
            extra += [("Allow", self._server.allow), ("Supported", "")]
        return make_response(
            request,
            status,
            to_tag=self.dialog.local_tag,
            body=body,
            content_type="application/sdp" if body else None,
            extra=[*extra, ("Server", self._server.config.user_agent)],
        )

    def _respond_invite(self, response: SipResponse) -> None:
        if self.invite_tx.state == "proceeding":
            self._server.respond(self.invite_tx, response)

    def _send_2xx(self, tx: InviteServerTransaction, response: SipResponse) -> None:
        """Send a 2xx to an INVITE and retransmit it T1, 2T1, ... T2 until the ACK (§13.3.1.4)."""
        self._server.respond(tx, response)
        self._pending_ack = response.cseq[0]
        loop = asyncio.get_running_loop()
        timers = self._server.config.timers

        def retransmit(interval: float) -> None:
            if self._pending_ack is None or self.state == "ended":
                return
            tx.resend()
            nxt = min(2 * interval, timers.t2)
            self._timers.append(loop.call_later(nxt, retransmit, nxt))

        self._timers.append(loop.call_later(timers.t1, retransmit, timers.t1))
        self._timers.append(loop.call_later(self._server.ack_timeout, self._ack_timeout))

    def _ack_timeout(self) -> None:
        if self._pending_ack is None or self.state == "ended":
            return
        self._pending_ack = None
        log.warning("call %s: no ACK for our 2xx within %.1f s; sending BYE", self.call_id, self._server.ack_timeout)
        self._end("ack-timeout")
        self._server.spawn(self._send_bye(None))

    async def _send_bye(self, cause: str | None) -> None:
        headers = [("Reason", cause)] if cause else []
        tx = self._send_request("BYE", headers)
        try:
            await tx.response
        except ClientTransactionTimeout:
            log.info("call %s: BYE got no response", self.call_id)

    def _send_request(self, method: str, headers: list[tuple[str, str]]) -> NonInviteClientTransaction:
        transport = self.peer.transport
        request, next_hop = self.dialog.request(
            method, via=self._server.via(transport), contact=self._server.contact(transport), headers=headers
        )
        request.headers.add("User-Agent", self._server.config.user_agent)
        return self._server.send_request(self.peer, request, next_hop)

    def _cancel_timers(self) -> None:
        for h in self._timers:
            h.cancel()
        self._timers.clear()

    def _end(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        self._cancel_timers()
        self._pending_ack = None
        if not self._ended.done():
            self._ended.set_result(reason)
        if self._refer_result is not None and not self._refer_result.done():
            self._refer_result.set_result((False, f"call ended: {reason}"))
        self._server.call_ended(self)


def _contact_uri(value: str) -> str:
    return NameAddr.parse(value).uri


def _sipfrag_status(body: bytes) -> int | None:
    first = body.decode("utf-8", "replace").strip().split("\r\n", 1)[0].split("\n", 1)[0]
    parts = first.split()
    if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return None
