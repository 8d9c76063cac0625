"""WebRTC calls into call sessions: the page sees transcripts, prompts and where it is routed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dialog.redact import mask_caller
from ivr.calls.session import CallDeps, CallSession, Transport
from ivr.webrtc.endpoint import CallInfo
from ivr.webrtc.leg import WebRtcLeg

log = logging.getLogger(__name__)


class WebRtcControl:
    """A browser call has nowhere to be transferred to: the page is told the queue (or URI), then the
    call ends."""

    transport: Transport = "webrtc"

    def __init__(self, leg: WebRtcLeg) -> None:
        self.leg = leg

    async def route(self, queue: str) -> None:
        # The route event itself went out with the other page events.
        await self.leg.close("routed")

    async def transfer(self, uri: str) -> None:
        self.leg.send_event({"type": "transfer", "uri": uri})
        await self.leg.close("transferred")

    async def hangup(self, reason: str) -> None:
        await self.leg.close(reason)

    def notify(self, event: dict[str, Any]) -> None:
        self.leg.send_event(event)


class WebRtcCallHandler:
    """`WebRtcEndpoint(on_call=handler)`: one call session per connected page."""

    def __init__(self, deps: CallDeps, present_caller: Callable[[str], str] = mask_caller) -> None:
        self.deps = deps
        # The browser's address as the call record, its context and the logs keep it (masked by default).
        self.present_caller = present_caller

    async def __call__(self, leg: WebRtcLeg, info: CallInfo) -> None:
        caller = self.present_caller(info.remote_address) if info.remote_address else "webrtc"
        try:
            session = CallSession(info.call_id, caller, leg, WebRtcControl(leg), self.deps)
            outcome = await session.run()
            log.info("WebRTC call %s from %s (%s) ended: %s", info.call_id, caller, info.codec, outcome)
        finally:
            await leg.close("hangup")
