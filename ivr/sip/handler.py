"""SIP calls into call sessions: an RTP session per call, answered, then driven by a `CallSession`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from dialog.redact import mask_caller
from ivr.calls.session import CallDeps, CallSession, Transport
from ivr.media.rtp_session import RtpParameters, RtpSession, RtpSessionConfig
from ivr.sip.call import CallEnded, IncomingCall
from ivr.sip.sdp import MediaOffer

log = logging.getLogger(__name__)


def rtp_parameters(media: MediaOffer) -> RtpParameters:
    return RtpParameters(
        remote_host=media.remote_ip,
        remote_port=media.remote_port,
        payload_type=media.payload_type,
        codec=media.codec,
        telephone_event_pt=media.telephone_event_pt,
        ptime_ms=media.ptime,
    )


class SipControl:
    """Routing over SIP: REFER to the queue's URI where one is configured, else the call ends here
    (the route is in the call record either way)."""

    transport: Transport = "sip"

    def __init__(self, call: IncomingCall, queue_uris: Mapping[str, str]) -> None:
        self.call = call
        self.queue_uris = queue_uris
        self.transferred_to: str | None = None

    async def route(self, queue: str) -> None:
        uri = self.queue_uris.get(queue)
        if uri is None:
            await self.hangup("routed")
            return
        await self.transfer(uri)

    async def transfer(self, uri: str) -> None:
        if await self.call.transfer(uri):
            self.transferred_to = uri
        elif not self.call.ended:
            await self.hangup("transfer-failed")

    async def hangup(self, reason: str) -> None:
        await self.call.hangup(reason)

    def notify(self, event: dict[str, Any]) -> None:
        """A phone has no screen for our events."""


class SipCallHandler:
    """`SipServer(on_call=handler)`: one RTP session and one call session per admitted INVITE."""

    def __init__(
        self,
        deps: CallDeps,
        rtp_config: RtpSessionConfig,
        local_ip: str,
        *,
        queue_uris: Mapping[str, str] | None = None,
        present_caller: Callable[[str], str] = mask_caller,
    ) -> None:
        self.deps = deps
        self.rtp_config = rtp_config
        self.local_ip = local_ip
        self.queue_uris = dict(queue_uris or {})
        # The caller's number as the call record, its context and the logs keep it (masked by default).
        self.present_caller = present_caller

    async def __call__(self, call: IncomingCall) -> None:
        params = rtp_parameters(call.media) if call.media is not None else None
        rtp = await RtpSession.open(params, self.rtp_config)
        caller = self.present_caller(call.caller_user or call.from_uri)
        session = CallSession(call.call_id, caller, rtp, SipControl(call, self.queue_uris), self.deps)
        watcher: asyncio.Task[None] | None = None
        try:
            call.on_media_change = lambda media: rtp.update(rtp_parameters(media))
            call.on_dtmf = lambda digit: session.dtmf(digit.digit)
            call.ringing()
            await call.answer(self.local_ip, rtp.local_port)
            if params is None and call.media is not None:  # delayed offer: the caller's answer came in the ACK
                rtp.update(rtp_parameters(call.media))

            async def watch() -> None:
                session.leg_gone(await call.wait_ended())

            watcher = asyncio.create_task(watch(), name=f"sip-watch-{call.call_id}")
            outcome = await session.run()
            log.info("SIP call %s from %s ended: %s", call.call_id, caller, outcome)
        except CallEnded as exc:
            log.info("SIP call %s ended before it was answered: %s", call.call_id, exc.reason)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await rtp.close(call.end_reason or "hangup")
