"""Who may post a WebRTC offer: each offer spends a short-lived, single-use token that the softphone
page fetches from GET /webrtc/token (public, rate-limited per source address), sent back in the
`X-Offer-Token` header of a JSON post, from an allowed Origin.

- JSON only (415 otherwise): a cross-site page can post `text/plain` without a CORS preflight, but
  not `application/json` or a custom header.
- Origin (what a browser sends): with `allowed_origins` empty it must be this very host (the page is
  served here), else one of the list. Requests without one (not from a browser) pass.
- Tokens: HMAC-SHA256 over expiry and nonce with a server secret (random per process unless set:
  replicas behind one address need the same `secret`). A spent token is remembered until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ivr.calls.ratelimit import BucketParams, KeyedLimiter, retry_after

TOKEN_HEADER = "X-Offer-Token"
OFFER_GUARD_REFUSED = Counter(
    "voicenav_webrtc_offer_guard_refused_total", "Offer and token requests refused before any SDP work", ["reason"]
)


class OfferGuardParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    secret: SecretStr | None = Field(None, description="token signing key; random per process when unset")
    token_ttl_s: float = Field(60.0, gt=0, le=3600, description="seconds an offer token stays valid")
    allowed_origins: tuple[str, ...] = Field((), description="pages on other origins allowed to place calls")
    token_rate: BucketParams = Field(
        BucketParams(rate_per_s=0.2, burst=5), description="offer tokens per source address (one per call)"
    )


class OfferTokens:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock
        self._spent: dict[str, float] = {}  # token -> expiry

    def _sign(self, body: str) -> str:
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self) -> str:
        body = f"{int(self._clock() + self._ttl_s)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body)}"

    def redeem(self, token: str) -> bool:
        """True once for a token we issued that has not expired."""
        body, _, sig = token.rpartition(".")
        if not body or not hmac.compare_digest(sig, self._sign(body)):
            return False
        try:
            expiry = float(body.split(".", 1)[0])
        except ValueError:
            return False
        now = self._clock()
        if expiry < now or token in self._spent:
            return False
        self._spent = {t: e for t, e in self._spent.items() if e >= now}
        self._spent[token] = expiry
        return True


def _refuse(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    OFFER_GUARD_REFUSED.labels(reason).inc()
    return web.json_response({"error": reason, "detail": detail}, status=status, headers=headers)


class OfferGuard:
    def __init__(self, params: OfferGuardParams) -> None:
        self.params = params
        secret = params.secret.get_secret_value().encode() if params.secret else secrets.token_bytes(32)
        self.tokens = OfferTokens(secret, params.token_ttl_s)
        self._issued = KeyedLimiter(params.token_rate)

    def _origin_refused(self, request: web.Request) -> web.Response | None:
        origin = request.headers.get("Origin")
        if origin is None:
            allowed = True  # not a browser: it could send any Origin it likes, so there is nothing to check
        elif self.params.allowed_origins:
            allowed = origin in self.params.allowed_origins
        else:
            allowed = urlsplit(origin).netloc == request.host
        return None if allowed else _refuse(403, "origin", "calls from this origin are not allowed")

    async def token(self, request: web.Request) -> web.Response:
        """GET /webrtc/token -> {"token", "expires_in_s"}."""
        refused = self._origin_refused(request)
        if refused is not None:
            return refused
        wait = self._issued.take(request.remote or "unknown")
        if wait > 0:
            return _refuse(429, "rate-limited", "too many calls from this address", {"Retry-After": retry_after(wait)})
        return web.json_response(
            {"token": self.tokens.issue(), "expires_in_s": self.params.token_ttl_s},
            headers={"Cache-Control": "no-store"},
        )

    def check_offer(self, request: web.Request) -> web.Response | None:
        """The refusal of an offer request before its body is read, or None to go on."""
        if request.content_type != "application/json":
            return _refuse(415, "unsupported-media-type", "offers must be application/json")
        refused = self._origin_refused(request)
        if refused is not None:
            return refused
        token = request.headers.get(TOKEN_HEADER)
        if not token or not self.tokens.redeem(token):
            detail = "missing offer token" if not token else "invalid, expired or spent offer token"
            return _refuse(
                401, "unauthorized", f"{detail}: GET /webrtc/token first", {"WWW-Authenticate": "OfferToken"}
            )
        return None
