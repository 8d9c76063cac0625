"""Who may reach the SIP server and how fast: a source allowlist (everything else is dropped
unanswered, TCP connections closed at once), a per-source rate of new INVITEs (503 + Retry-After
beyond it), optional digest authentication of INVITEs, where SDP may aim our RTP, and how long an
answered call may wait for its ACK before it is ended and its slot freed.
"""

from __future__ import annotations

import ipaddress
import logging

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ivr.calls.ratelimit import BucketParams, KeyedLimiter, retry_after
from ivr.sip.dialog import new_tag
from ivr.sip.digest import DigestAuthenticator, DigestParams
from ivr.sip.message import SipRequest, SipResponse, make_response

log = logging.getLogger(__name__)

SIP_REFUSED = Counter(
    "voicenav_sip_admission_refused_total",
    "SIP traffic refused by admission: source (messages and TCP connections from outside the allowlist), "
    "rate-limited and auth-challenge / auth-failed (new INVITEs), media-address (SDP aiming RTP elsewhere)",
    ["reason"],
)

ANY_SOURCE = "any"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an address (zone dropped, IPv4-mapped IPv6 as IPv4), None if it is not an IP literal."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class SipAccessParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    allow_sources: tuple[str, ...] = Field(
        ("127.0.0.0/8", "::1/128"),
        description='CIDRs of the gateways/SBCs that may send SIP; "any" (alone) lets everyone in',
    )
    invite_rate: BucketParams = Field(
        BucketParams(rate_per_s=2.0, burst=10), description="new INVITEs per source address"
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 for a source over its INVITE rate")
    ack_timeout_s: float = Field(4.0, gt=0, description="an answered call with no ACK by then ends (at most 64*T1)")
    digest: DigestParams | None = Field(None, description="challenge new INVITEs for these credentials")
    media_must_match_source: bool = Field(
        True,
        description="the SDP's RTP address must be the INVITE's source or inside allow_sources (488 otherwise), "
        "so that a caller cannot aim our RTP at a third party",
    )

    @field_validator("allow_sources")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if ANY_SOURCE in v:
            if len(v) != 1:
                raise ValueError('"any" cannot be combined with networks')
            return v
        for cidr in v:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError on junk
        return v


class SipAccess:
    def __init__(self, params: SipAccessParams) -> None:
        self.params = params
        self._any = params.allow_sources == (ANY_SOURCE,)
        self._networks: list[Network] = (
            [] if self._any else [ipaddress.ip_network(c, strict=False) for c in params.allow_sources]
        )
        self._invites = KeyedLimiter(params.invite_rate)
        self._digest = DigestAuthenticator(params.digest) if params.digest is not None else None

    def source_allowed(self, host: str) -> bool:
        if self._any:
            return True
        addr = _address(host)
        if addr is None:
            return False
        allowed = any(addr in net for net in self._networks)
        if not allowed:
            SIP_REFUSED.labels("source").inc()
        return allowed

    def media_allowed(self, address: str, source: str) -> bool:
        """May we send RTP to `address`, offered in SDP that came from `source`? A hold address always may."""
        if not self.params.media_must_match_source:
            return True
        media, origin = _address(address), _address(source)
        if media is None or media.is_unspecified:
            return media is not None
        if media == origin or (not self._any and any(media in net for net in self._networks)):
            return True
        SIP_REFUSED.labels("media-address").inc()
        return False

    def refuse_invite(self, request: SipRequest, source: str) -> SipResponse | None:
        """The final response for a new (out-of-dialog) INVITE that may not start a call, or None."""
        wait = self._invites.take(source)
        if wait > 0:
            SIP_REFUSED.labels("rate-limited").inc()
            # 503 (RFC 3261 §21.5.4): a proxy or SBC may try another instance; 486 would mean the callee is busy
            return make_response(
                request,
                503,
                to_tag=new_tag(),
                extra=[("Retry-After", retry_after(max(wait, self.params.retry_after_s)))],
            )
        if self._digest is None:
            return None
        verdict = self._digest.check(request)
        if verdict == "ok":
            return None
        SIP_REFUSED.labels("auth-challenge" if verdict in ("missing", "stale") else "auth-failed").inc()
        if verdict == "wrong":
            log.info("SIP digest credentials refused for %s from %s", request.call_id, source)
        return make_response(request, 401, to_tag=new_tag(), extra=self._digest.challenges(stale=verdict == "stale"))
