"""Who may use which HTTP route: bearer tokens with roles, limits on failed attempts and on
recognition, and CORS (closed unless origins are configured).

Public: /healthz, /readyz, the softphone page and its files, and the WebRTC offer-token route.
/v1/hotwords* and /webrtc/offer check their own credentials (admin token; signed offer token); a
401 from them counts as a failed attempt here too. Every other route needs a token with a role:
/v1/calls* `reader`, /v1/recognize `recognize`, /metrics `reader` (unless `metrics_public`), and
anything not listed `reader`, so a new route is never open by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from hotwords.auth import AdminAuth, Principal, Role
from ivr.calls.ratelimit import BucketParams, KeyedLimiter, retry_after

log = logging.getLogger(__name__)

HTTP_DENIED = Counter("voicenav_http_denied_total", "HTTP requests refused by access control", ["route", "reason"])
PRINCIPAL = web.RequestKey("principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rule = tuple[str, Role | Literal["public", "own"]]  # (route label, what it needs)

_PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/", "/webrtc/token"})


class HttpAuthParams(BaseModel):
    """Access control of the HTTP routes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metrics_public: bool = Field(
        False, description="serve /metrics without a token: only where the HTTP port is reachable internally"
    )
    cors_origins: tuple[str, ...] = Field((), description="origins other sites' pages may call us from; none")
    public_paths: tuple[str, ...] = Field((), description="more paths served without a token (routes added to the app)")
    auth_failures: BucketParams = Field(
        BucketParams(rate_per_s=10 / 60, burst=10),
        description="failed token checks a source may make (burst, then rate) before it gets 429",
    )
    recognize: BucketParams = Field(
        BucketParams(rate_per_s=5, burst=20), description="/v1/recognize requests per token identity"
    )


def rule_for(path: str, params: HttpAuthParams) -> Rule:
    if path in _PUBLIC_PATHS or path.startswith("/softphone/") or path in params.public_paths:
        return "public", "public"
    if path == "/metrics":
        return "metrics", "public" if params.metrics_public else "reader"
    if path.startswith("/v1/hotwords"):
        return "hotwords", "own"
    if path == "/webrtc/offer":
        return "webrtc-offer", "own"
    if path == "/v1/calls" or path.startswith("/v1/calls/"):
        return "calls", "reader"
    if path == "/v1/recognize":
        return "recognize", "recognize"
    return "other", "reader"


def _denied(route: str, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    HTTP_DENIED.labels(route, reason).inc()
    return web.json_response({"error": reason, "detail": detail}, status=status, headers=headers)


def _unauthorized(route: str, detail: str) -> web.Response:
    # RFC 6750 §3: no error code when no token came at all
    challenge = 'Bearer realm="voicenav"' + ("" if detail == "missing bearer token" else ', error="invalid_token"')
    return _denied(route, 401, "unauthorized", detail, {"WWW-Authenticate": challenge})


def access_middleware(auth: AdminAuth | None, params: HttpAuthParams) -> Handler:
    """The middleware guarding every route; `auth` None (no token file) refuses every guarded route."""
    failures = KeyedLimiter(params.auth_failures)
    recognitions = KeyedLimiter(params.recognize)
    origins = frozenset(params.cors_origins)

    def cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        route, need = rule_for(request.path, params)
        if need == "public":
            return await handler(request)
        source = request.remote or "unknown"
        wait = failures.wait_s(source)
        if wait > 0:
            return _denied(
                route, 429, "too-many-failures", "too many failed attempts", {"Retry-After": retry_after(wait)}
            )
        if need == "own":
            response = await handler(request)
            if response.status == 401:
                failures.take(source)
            return response
        authorization = request.headers.get("Authorization")
        principal = auth.authenticate(authorization) if auth is not None else None
        if principal is None:
            failures.take(source)
            return _unauthorized(route, "invalid bearer token" if authorization else "missing bearer token")
        if need not in principal.roles:
            return _denied(route, 403, "forbidden", f"the token lacks the {need} role")
        if route == "recognize":
            wait = recognitions.take(principal.identity)
            if wait > 0:
                return _denied(route, 429, "rate-limited", "too many requests", {"Retry-After": retry_after(wait)})
        request[PRINCIPAL] = principal
        return await handler(request)

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and request.headers.get("Origin") in origins:
            # a CORS preflight carries no credentials; the request it announces is checked as usual
            preflight = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                },
            )
            return cors(request, preflight)
        return cors(request, await guarded(request, handler))

    if auth is None:
        log.warning("no API tokens configured: every token-guarded HTTP route answers 401")
    return access
