"""The browser softphone page (ivr/app/static): served at "/" with its script and stylesheet."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Same-origin only: the page talks to no one but this server (no CDNs, no third-party requests).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "media-src 'self' blob: mediastream:; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html", headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"}
    )


def setup_softphone_routes(app: web.Application) -> None:
    """GET / (the page) and GET /softphone/{softphone.js,softphone.css}."""
    app.router.add_get("/", _index)
    app.router.add_static("/softphone/", STATIC_DIR, append_version=False)
