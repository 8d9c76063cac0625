"""The SIP front end's settings: where it listens, what it advertises, how transfers end."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ivr.sip.access import SipAccessParams
from ivr.sip.transport import TcpLimits, TransportName


class SipParams(BaseModel):
    host: str = Field("127.0.0.1", description="address SIP listens on")
    port: int = Field(5060, ge=0, le=65535, description="SIP port (UDP and TCP); 0: any free port")
    transports: tuple[TransportName, ...] = Field(("udp", "tcp"), description="transports SIP listens on")
    public_host: str | None = Field(
        None, description="address advertised in Via, Contact and SDP; default: host (required for a wildcard host)"
    )
    user_agent: str = Field("voicenav", description="User-Agent and Server header value")
    transfer_timeout: float = Field(32.0, gt=0, description="seconds a REFER transfer may take before it fails")
    transfer_fallback: Literal["keep", "hangup", "hangup-with-reason"] = Field(
        "keep",
        description='after a failed REFER: "keep" the call for the application, or release it with BYE, '
        'plain ("hangup") or with a Reason header naming the failed target ("hangup-with-reason")',
    )

    access: SipAccessParams = Field(
        SipAccessParams(), description="who may send SIP: source networks, INVITE rate, digest, ACK timer"
    )
    tcp: TcpLimits = Field(TcpLimits(), description="SIP over TCP: connection cap and timeouts")

    @model_validator(mode="after")
    def _check(self) -> SipParams:
        if not self.transports:
            raise ValueError("at least one transport")
        if self.host in ("0.0.0.0", "::", "") and not self.public_host:
            raise ValueError("public_host is required when binding a wildcard address")
        return self
