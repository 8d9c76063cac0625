"""Dialog state on the UAS side (RFC 3261 §12) and construction of our in-dialog requests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from ivr.sip.message import MAGIC_COOKIE, Headers, NameAddr, SipRequest, SipUri, Via


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


@dataclass(slots=True)
class Dialog:
    call_id: str
    local: NameAddr  # the INVITE's To, with our tag
    remote: NameAddr  # the INVITE's From, with the caller's tag
    remote_target: str  # Contact URI of the caller (updated by target refresh requests)
    route_set: list[str] = field(default_factory=list)  # Record-Route URIs, in order (§12.1.1)
    remote_cseq: int = 0
    local_cseq: int = 0

    @property
    def local_tag(self) -> str:
        return self.local.tag or ""

    @property
    def remote_tag(self) -> str:
        return self.remote.tag or ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.local_tag, self.remote_tag

    def request(
        self,
        method: str,
        *,
        via: Via,
        contact: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> tuple[SipRequest, SipUri]:
        """Build an in-dialog request (§12.2.1.1) and the URI of its next hop."""
        self.local_cseq += 1
        target = self.remote_target
        routes = list(self.route_set)
        next_hop = SipUri.parse(routes[0]) if routes else SipUri.parse(target)
        if routes and "lr" not in next_hop.params:
            # strict router: it takes the Request-URI, the remote target goes last in Route
            request_uri = str(next_hop)
            routes = [*routes[1:], target]
        else:
            request_uri = target
        h = Headers()
        h.add("Via", str(via))
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local))
        h.add("To", str(self.remote))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.local_cseq} {method}")
        for r in routes:
            h.add("Route", f"<{r}>")
        h.add("Contact", contact)
        for name, value in headers or []:
            h.add(name, value)
        if body and content_type:
            h.add("Content-Type", content_type)
        return SipRequest(method=method, uri=request_uri, headers=h, body=body), next_hop
