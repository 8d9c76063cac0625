"""The HTTP side of the service (aiohttp): health, metrics, recognition, call records, the WebRTC
offer endpoint and the softphone page.

With `http.internal_port` set the operators' routes (/metrics, the hot-word admin API, call records)
move to a second app on that port, reachable only inside the cluster, and the public port serves
callers alone: the softphone page, /webrtc/*, /v1/recognize, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from asr_engine.audio.wav import AudioFormatError, parse_wav
from asr_engine.batcher import Priority, RecognizerBusy, RecognizerOverloaded, RecognizerRestarted
from asr_engine.transcribe import transcribe_audio_batched
from dialog.records import setup_routes as setup_record_routes
from hotwords.auth import AdminAuth
from hotwords.schema import validate_scope
from ivr.app.auth import HttpAuthParams, access_middleware
from ivr.app.biasing import Biasing
from ivr.app.hotword_admin import admin_auth, setup_hotword_admin
from ivr.app.service import Service
from ivr.app.softphone import setup_softphone_routes
from ivr.webrtc.endpoint import setup_routes as setup_webrtc_routes
from ivr.webrtc.offer_guard import OfferGuard, OfferGuardParams

log = logging.getLogger(__name__)

SERVICE = web.AppKey("service", Service)
LOADER = web.AppKey("loader", asyncio.Task)
HTTP_REJECTED = Counter("voicenav_http_rejected_total", "HTTP requests refused", ["route", "reason"])


def _error(status: int, reason: str, route: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    HTTP_REJECTED.labels(route, code).inc()
    return web.json_response({"error": reason}, status=status, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    admission = svc.admission
    refused = admission.refusal()
    if refused == "draining":
        return web.json_response({"status": "draining"}, status=503, headers=admission.retry_after)
    if refused == "loading":
        status = "loading" if svc.load_error is None else "failed"
        return web.json_response({"status": status}, status=503, headers=admission.retry_after)
    body: dict[str, object] = {"status": "ready", "active_calls": admission.active()}
    if refused == "capacity":
        # Full is still ready: new callers get SIP 503 + Retry-After from this pod, while readiness stays
        # up so a full pod is neither pulled from its Services nor blocks evictions and rollouts.
        body["status"] = "full"
    stores = svc.dialog_stores
    if stores is not None and not await stores.probe():
        # Calls go on with their state in memory and their writes queued for Redis: still ready, but
        # an operator (and the dialog_store_up gauge) sees that records are not reaching Redis.
        body["dialog_store"] = "degraded"
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def recognize(request: web.Request) -> web.Response:
    """POST a WAV body; answers {"text", "segments", "seconds"}."""
    svc = request.app[SERVICE]
    if not svc.ready.is_set() or svc.batcher is None or svc.vad is None:
        return _error(503, "recognizer is not ready", "recognize", "not-ready", svc.admission.retry_after)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "audio too large", "recognize", "too-large")
    try:
        audio = parse_wav(body)
    except AudioFormatError as e:
        return _error(400, f"bad audio: {e}", "recognize", "bad-audio")
    try:
        scopes = [validate_scope(s) for s in request.query.getall("scope", [])]
    except ValueError as e:
        return _error(400, f"bad scope: {e}", "recognize", "bad-scope")
    # The hot-word lists in force now (global, and any scopes asked for) bias this decode.
    composed = None
    if svc.hotwords is not None and svc.hotwords.lists:
        composed = await svc.hotwords.biaser(scopes=scopes)
    refine = None
    if composed is not None:
        refine = partial(Biasing(composed.graph, composed.corrector).refine, svc.recognizer)
    # Callers on the line come first: a recording's chunks wait for their turns, or are refused now.
    try:
        result = await transcribe_audio_batched(
            svc.batcher, svc.vad, audio, composed, refine=refine, priority=Priority.UPLOAD
        )
    except RecognizerBusy:
        return _error(503, "recognizer busy with calls, retry later", "recognize", "busy", svc.admission.retry_after)
    except RecognizerOverloaded:
        return _error(503, "recognizer overloaded, retry later", "recognize", "overloaded", svc.admission.retry_after)
    except RecognizerRestarted:
        return _error(503, "recognizer restarted, retry", "recognize", "restarted", svc.admission.retry_after)
    if composed is not None:
        for segment in result.segments:
            composed.record_hits(composed.hits_in(segment.text))
    return web.json_response(
        {"text": result.text, "segments": [s.__dict__ for s in result.segments], "seconds": round(result.seconds, 4)}
    )


def _guarded_app(service: Service, auth: AdminAuth | None, http_auth: HttpAuthParams | None) -> web.Application:
    cfg = service.config
    app = web.Application(client_max_size=int(cfg.http.max_body_mb * 1024 * 1024))
    app[SERVICE] = service
    app.middlewares.append(access_middleware(auth, http_auth or cfg.http.access))
    return app


def _operator_routes(app: web.Application, service: Service, auth: AdminAuth | None) -> None:
    """/metrics, call records and (with admin tokens) the hot-word admin API."""
    app.router.add_get("/metrics", metrics)
    setup_record_routes(app, service.records, service.config.dialog.records)
    if auth is not None:
        setup_hotword_admin(
            app, service.hotword_store, service.config.hotwords, service.tokenizer, auth, service.admission.retry_after
        )


def build_app(
    service: Service,
    *,
    auth: AdminAuth | None = None,
    http_auth: HttpAuthParams | None = None,
    offer_guard: OfferGuardParams | None = None,
) -> web.Application:
    """The public HTTP app of `service`, guarded as its config says, which loads and stops the service
    with its own start-up and clean-up; `auth`, `http_auth` and `offer_guard` stand in for the
    configured tokens and settings (tests, embedding). Without `http.internal_port` it also serves
    what `build_internal_app` would."""
    cfg = service.config
    auth = auth if auth is not None else admin_auth(cfg.auth)
    app = _guarded_app(service, auth, http_auth)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/v1/recognize", recognize)
    if cfg.http.internal_port is None:
        _operator_routes(app, service, auth)
    setup_webrtc_routes(app, service.webrtc, guard=OfferGuard(offer_guard or cfg.webrtc.offers))
    setup_softphone_routes(app)

    async def start(app: web.Application) -> None:
        app[LOADER] = asyncio.create_task(service.load())
        service.start_pod_deletion_cost()

    async def stop(app: web.Application) -> None:
        app[LOADER].cancel()
        await asyncio.gather(app[LOADER], return_exceptions=True)
        await service.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


def build_internal_app(
    service: Service, *, auth: AdminAuth | None = None, http_auth: HttpAuthParams | None = None
) -> web.Application:
    """The app of `http.internal_port`: /metrics (without a token when `http.access.metrics_public`),
    call records (`reader`) and the hot-word admin API (`admin`). It neither loads nor stops the
    service: the public app does, and is cleaned up after this one."""
    auth = auth if auth is not None else admin_auth(service.config.auth)
    app = _guarded_app(service, auth, http_auth)
    _operator_routes(app, service, auth)
    return app
