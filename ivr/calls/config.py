"""How many calls an instance takes, how it sheds and drains them, and where routed calls go."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CallsParams(BaseModel):
    max_calls: int = Field(32, ge=1, description="concurrent calls (SIP and WebRTC together) before new ones get 503")
    drain_timeout_s: float = Field(300.0, ge=0, description="seconds to wait for active calls on SIGTERM")
    retry_after_s: int = Field(30, ge=0, description="Retry-After of a 503 while draining or full")
    queue_uris: dict[str, str] = Field(
        default_factory=dict, description="queue -> SIP URI a routed SIP call is transferred to (REFER)"
    )
    apology_transfer_uri: str | None = Field(None, description="where a call goes when the service fails it")
