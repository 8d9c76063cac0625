"""The hot-word admin API on the service's HTTP app.

The API checks uploads with the model's tokenizer, which exists only once the recognizer has
loaded; until then the admin routes answer 503, like /readyz.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from hotwords.api import setup_routes
from hotwords.auth import AdminAuth, AuthParams
from hotwords.config import HotwordsConfig
from hotwords.service import HotwordService
from hotwords.store import HotwordStore

log = logging.getLogger(__name__)


class LoadedTokenizer:
    """The recognizer's tokenizer once it is there (a `hotwords` codec)."""

    def __init__(self, get: Callable[[], object | None]) -> None:
        self._get = get

    def _tok(self):
        tok = self._get()
        if tok is None:  # the middleware below keeps requests away until the recognizer is loaded
            raise RuntimeError("recognizer not loaded")
        return tok

    def encode(self, text: str) -> list[int]:
        return self._tok().encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._tok().decode(ids)


def admin_auth(params: AuthParams) -> AdminAuth | None:
    """The admin tokens, or None (and the admin API stays off) when none are configured."""
    try:
        return AdminAuth.from_params(params)
    except ValueError as e:
        log.warning("hot-word admin API disabled: %s", e)
        return None


def setup_hotword_admin(
    app: web.Application,
    store: HotwordStore,
    config: HotwordsConfig,
    tokenizer: Callable[[], object | None],
    auth: AdminAuth,
    retry_after: dict[str, str],
) -> None:
    """`retry_after`: the service's Retry-After header for the 503 while the recognizer loads."""
    codec = LoadedTokenizer(tokenizer)
    setup_routes(app, HotwordService(store, codec, config), auth)

    @web.middleware
    async def loading(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path.startswith("/v1/hotwords") and tokenizer() is None:
            return web.json_response({"error": "recognizer is loading"}, status=503, headers=retry_after)
        return await handler(request)

    app.middlewares.append(loading)
