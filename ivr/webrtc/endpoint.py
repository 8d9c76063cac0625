"""WebRTC callers: a non-trickle SDP offer/answer endpoint that turns each caller into a `WebRtcLeg`.

GET  /webrtc/token                            ->  200 {"token", "expires_in_s"}  (see `offer_guard`)
POST /webrtc/offer  {"sdp", "type": "offer"}  ->  200 {"sdp", "type": "answer", "call_id"}
     (application/json, X-Offer-Token)            400 {"error", "detail"}  malformed JSON or SDP
                                                   401 / 403 / 415  no valid token / origin / not JSON
                                                   503 {"error"} + Retry-After  at capacity or draining
The answer carries all our ICE candidates (aiortc gathers before answering), so the page needs no
trickle channel. Each accepted call runs `on_call(leg, info)` in its own task; when it returns the
call is hung up and its slot freed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ivr.calls.admission import Admission, CallGate
from ivr.webrtc.ice import (
    count_candidates,
    is_loopback_only,
    keep_loopback_candidates,
    pinned_host_addresses,
    validate_host_addresses,
)
from ivr.webrtc.leg import WebRtcLeg
from ivr.webrtc.offer_guard import OfferGuard, OfferGuardParams

log = logging.getLogger(__name__)

OFFERS = Counter("voicenav_webrtc_offers_total", "SDP offers received")
ANSWERS = Counter("voicenav_webrtc_answers_total", "SDP answers sent, by negotiated audio codec", ["codec"])
FAILURES = Counter("voicenav_webrtc_offer_failures_total", "SDP offers refused, by reason", ["reason"])
ANSWER_SECONDS = Histogram(
    "voicenav_webrtc_answer_seconds",
    "Time from offer to answer (includes ICE gathering)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CALL_HANDLER_ERRORS = Counter("voicenav_webrtc_call_handler_errors_total", "on_call handlers that raised")

_MAX_SDP_CHARS = 64_000


class OfferBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sdp: str = Field(min_length=1, max_length=_MAX_SDP_CHARS)
    type: Literal["offer"]


class AnswerBody(BaseModel):
    sdp: str
    type: Literal["answer"] = "answer"
    call_id: str


class IceServer(BaseModel):
    """A STUN/TURN server for the endpoint's ICE agent (none by default: host candidates only)."""

    model_config = ConfigDict(frozen=True)
    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: SecretStr | None = None


class WebRtcConfig(BaseModel):
    """The endpoint's settings as they appear in the service configuration; how many calls it takes
    and the Retry-After of its 503s are the service's admission settings."""

    model_config = ConfigDict(extra="forbid")
    host_addresses: list[str] | None = Field(
        default=None, description="local IPs to gather ICE host candidates on; none: every interface"
    )
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description='STUN/TURN servers, [{"urls": [...], "username": ..., "credential": ...}]; none by default',
    )
    sample_rate: Literal[8000, 16000, 48000] = Field(default=16000, description="rate of the audio the calls get")
    connect_timeout_s: float = Field(
        default=15.0, gt=0, description='seconds from answer to connected before a call ends as "ice-failed"'
    )
    offers: OfferGuardParams = Field(
        default=OfferGuardParams(), description="what an offer must carry: a fresh token, JSON, an allowed Origin"
    )

    @field_validator("host_addresses")
    @classmethod
    def _ip_literals(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(validate_host_addresses(v))


class CallInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    call_id: str
    transport: Literal["webrtc"] = "webrtc"
    codec: str  # negotiated audio codec, e.g. "opus/48000", "PCMU/8000"
    remote_address: str | None  # the HTTP peer that posted the offer
    user_agent: str | None
    started_at: datetime


class OfferRejected(Exception):
    """Why an offer got no answer; `status` is the HTTP status to send."""

    def __init__(self, reason: str, status: int, detail: str = "", retry_after_s: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s


OnCall = Callable[[WebRtcLeg, CallInfo], Awaitable[None]]


class WebRtcEndpoint:
    """Answers offers and owns the resulting calls; `admission` decides which offers become calls
    (without one the endpoint admits against its own `max_calls` and `retry_after_s`).

    host_addresses: local IPs to gather ICE host candidates on (None: every interface, aioice's
        default). If all are loopback, non-loopback candidates are also stripped from offers.
    ice_servers: STUN/TURN servers; empty by default (aiortc would otherwise use a public STUN server).
    sample_rate: rate of the `AudioFrame`s the legs deliver (mono int16).
    connect_timeout_s: a call that is not connected this long after the answer ends as "ice-failed".
    """

    def __init__(
        self,
        on_call: OnCall,
        *,
        admission: CallGate | None = None,
        max_calls: int = 50,
        host_addresses: Sequence[str] | None = None,
        ice_servers: Sequence[IceServer] = (),
        sample_rate: int = 16000,
        connect_timeout_s: float = 15.0,
        retry_after_s: int = 5,
    ) -> None:
        self._on_call = on_call
        self._admission = admission or Admission(max_calls, retry_after_s)
        self._hosts = validate_host_addresses(host_addresses) if host_addresses is not None else None
        self._loopback_only = is_loopback_only(self._hosts)
        self._ice_servers = [
            RTCIceServer(
                urls=s.urls,
                username=s.username,
                credential=s.credential.get_secret_value() if s.credential is not None else None,
            )
            for s in ice_servers
        ]
        self._sample_rate = sample_rate
        self._connect_timeout_s = connect_timeout_s
        self._answering = 0
        self._legs: dict[str, WebRtcLeg] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, on_call: OnCall, config: WebRtcConfig, admission: CallGate) -> WebRtcEndpoint:
        return cls(
            on_call,
            admission=admission,
            host_addresses=config.host_addresses,
            ice_servers=config.ice_servers,
            sample_rate=config.sample_rate,
            connect_timeout_s=config.connect_timeout_s,
        )

    @property
    def active_calls(self) -> int:
        """Calls in progress plus offers being answered."""
        return len(self._legs) + self._answering

    @property
    def draining(self) -> bool:
        return self._admission.draining

    def legs(self) -> list[WebRtcLeg]:
        return list(self._legs.values())

    def start_draining(self) -> None:
        """Refuse new offers (503) and let current calls finish."""
        self._admission.start_draining()

    async def close(self, reason: str = "server-shutdown", *, grace_s: float = 5.0) -> None:
        """Refuse new offers, hang up every call with `reason`, and wait for the call handlers."""
        self._admission.start_draining()
        await asyncio.gather(*(leg.close(reason) for leg in list(self._legs.values())), return_exceptions=True)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def answer(
        self, offer: OfferBody, *, remote_address: str | None = None, user_agent: str | None = None
    ) -> AnswerBody:
        """Accept `offer` and start the call, or raise `OfferRejected`."""
        refused = self._admission.admit("webrtc")
        if refused is not None:
            raise self._reject(refused, 503, retry_after_s=self._admission.retry_after_s)
        started = False
        self._answering += 1
        try:
            t0 = time.monotonic()
            result = await self._negotiate(offer.sdp, remote_address, user_agent)
            started = True
            ANSWER_SECONDS.observe(time.monotonic() - t0)
            return result
        finally:
            self._answering -= 1
            if not started:
                self._admission.release("webrtc")

    async def _negotiate(self, sdp: str, remote_address: str | None, user_agent: str | None) -> AnswerBody:
        sdp = self._checked_offer_sdp(sdp)
        call_id = uuid.uuid4().hex
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        leg = WebRtcLeg(pc, call_id, sample_rate=self._sample_rate, connect_timeout_s=self._connect_timeout_s)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except OperationError as exc:
                raise self._reject("no-common-codec", 400, "no audio codec in common") from exc
            except Exception as exc:  # aiortc raises assorted types for SDP it cannot use
                raise self._reject("invalid-sdp", 400, str(exc) or type(exc).__name__) from exc
            pc.addTrack(leg.outbound_track)
            with pinned_host_addresses(self._hosts):
                await pc.setLocalDescription(await pc.createAnswer())
            codec = _audio_codec(pc.localDescription.sdp)
        except BaseException:
            await leg.discard()
            raise
        info = CallInfo(
            call_id=call_id,
            codec=codec,
            remote_address=remote_address,
            user_agent=user_agent,
            started_at=datetime.now(UTC),
        )
        self._legs[call_id] = leg
        leg.start()
        task = asyncio.create_task(self._run_call(leg, info), name=f"webrtc-call-{call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        ANSWERS.labels(codec.split("/")[0].lower()).inc()
        # Not the browser's address: the call handler logs who called as the deployment shows callers.
        log.info("call %s: answered (%s)", call_id, codec)
        return AnswerBody(sdp=pc.localDescription.sdp, call_id=call_id)

    def _checked_offer_sdp(self, sdp: str) -> str:
        if self._loopback_only:
            sdp, candidates = keep_loopback_candidates(sdp)
        else:
            candidates = count_candidates(sdp)
        try:
            parsed = aiortc_sdp.SessionDescription.parse(sdp)
        except Exception as exc:  # the parser raises ValueError/IndexError/KeyError on junk
            raise self._reject("invalid-sdp", 400, str(exc) or type(exc).__name__) from exc
        audio = [m for m in parsed.media if m.kind == "audio" and m.port != 0]
        if not audio:
            raise self._reject("no-audio", 400, "the offer has no audio section")
        if audio[0].direction not in (None, "sendrecv"):
            raise self._reject("audio-direction", 400, "audio must be sendrecv")
        if candidates == 0:
            raise self._reject("no-candidates", 400, "no usable ICE candidates (non-trickle offer expected)")
        return sdp

    async def _run_call(self, leg: WebRtcLeg, info: CallInfo) -> None:
        reason = "bye"
        try:
            await self._on_call(leg, info)
        except Exception:
            CALL_HANDLER_ERRORS.inc()
            log.exception("call %s: handler failed", info.call_id)
            reason = "error"
        finally:
            await leg.close(reason)
            self._legs.pop(info.call_id, None)
            self._admission.release("webrtc")

    @staticmethod
    def _reject(reason: str, status: int, detail: str = "", retry_after_s: int | None = None) -> OfferRejected:
        FAILURES.labels(reason).inc()
        return OfferRejected(reason, status, detail, retry_after_s)


def _audio_codec(answer_sdp: str) -> str:
    for m in aiortc_sdp.SessionDescription.parse(answer_sdp).media:
        if m.kind == "audio" and m.rtp.codecs:
            c = m.rtp.codecs[0]
            return f"{c.mimeType.split('/', 1)[1]}/{c.clockRate}"
    # setRemoteDescription already refused offers without a common audio codec
    raise RuntimeError("answer without an audio codec")


def setup_routes(
    app: web.Application, endpoint: WebRtcEndpoint, *, guard: OfferGuard, path: str = "/webrtc/offer"
) -> None:
    """Add the offer and offer-token routes, and hang up every WebRTC call when the app shuts down."""

    async def offer(request: web.Request) -> web.Response:
        OFFERS.inc()
        refused = guard.check_offer(request)
        if refused is not None:
            return refused
        try:
            body = OfferBody.model_validate_json(await request.read())
        except ValidationError as exc:
            err = exc.errors()[0]
            reason = "malformed-json" if err["type"] == "json_invalid" else "invalid-body"
            FAILURES.labels(reason).inc()
            return web.json_response({"error": reason, "detail": err["msg"]}, status=400)
        try:
            ans = await endpoint.answer(
                body, remote_address=request.remote, user_agent=request.headers.get("User-Agent")
            )
        except OfferRejected as exc:
            headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
            return web.json_response({"error": exc.reason, "detail": exc.detail}, status=exc.status, headers=headers)
        except Exception:
            FAILURES.labels("internal").inc()
            log.exception("answering an offer from %s failed", request.remote)
            return web.json_response({"error": "internal", "detail": "could not answer"}, status=500)
        return web.json_response(ans.model_dump())

    async def on_shutdown(_app: web.Application) -> None:
        await endpoint.close("server-shutdown")

    app.router.add_post(path, offer)
    app.router.add_get(path.rsplit("/", 1)[0] + "/token", guard.token)
    app.on_shutdown.append(on_shutdown)
