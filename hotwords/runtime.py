"""Putting the hot-word service together: one store, the admin routes and this replica's registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from hotwords.api import setup_routes
from hotwords.auth import AdminAuth
from hotwords.config import HotwordsConfig
from hotwords.graph import BiasGraph, WeightedPhrase, compile_graph
from hotwords.registry import HotwordRegistry
from hotwords.schema import Entry
from hotwords.service import Codec, HotwordService
from hotwords.store import Connect, open_store

REGISTRY_KEY = web.AppKey("hotwords_registry", HotwordRegistry)


def install(
    app: web.Application, config: HotwordsConfig, codec: Codec, auth: AdminAuth, redis: str | Connect | None = None
) -> HotwordRegistry:
    """Add the admin routes to `app` and run a registry for the app's lifetime (also at
    `app[REGISTRY_KEY]`); the store is Redis when `redis` (a URL or a `Connect`) is given, else process memory."""
    store = open_store(redis, config.key_prefix, config.audit_cap)
    registry = HotwordRegistry(store, codec, config)
    setup_routes(app, HotwordService(store, codec, config), auth, config.max_body_bytes)
    app[REGISTRY_KEY] = registry

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        await registry.start()
        yield
        await registry.stop()
        await store.close()

    app.cleanup_ctx.append(lifetime)
    return registry


def compile_entries(entries: Iterable[Entry], codec: Codec, config: HotwordsConfig) -> BiasGraph:
    """A graph straight from entries (e.g. `--hotwords` / `--hotword-file`), without a store.
    Phrases the tokenizer cannot carry are left out (see `BiasGraph.phrases`)."""
    graph, _ = compile_graph(
        [WeightedPhrase(e.phrase, config.default_boost if e.boost is None else e.boost) for e in entries],
        codec.encode,
        codec.decode,
        first_piece_boost=config.first_piece_boost,
        max_tokens=config.max_phrase_tokens,
        prompt_max_chars=config.prompt_max_chars,
    )
    return graph
