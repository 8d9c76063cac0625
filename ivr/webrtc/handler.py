"""WebRTC calls into call sessions: the page sees transcripts, prompts and where it is routed."""

from __future__ import annotations

import logging
from typing import Any

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

    def __init__(self, deps: CallDeps) -> None:
        self.deps = deps

    async def __call__(self, leg: WebRtcLeg, info: CallInfo) -> None:
        try:
            session = CallSession(info.call_id, info.remote_address or "webrtc", leg, WebRtcControl(leg), self.deps)
            outcome = await session.run()
            log.info("WebRTC call %s (%s) ended: %s", info.call_id, info.codec, outcome)
        finally:
            await leg.close("hangup")
