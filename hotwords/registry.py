"""The replica side: the hot-word lists currently in force and their compiled biasing graphs.

A registry follows the store's announcements, reloads a changed list, compiles its graph (in a worker
thread when large) and swaps the whole snapshot with one reference assignment, so decodes in flight keep
the graph they started with. A periodic resync catches announcements missed during a Redis outage or a
reconnect; while the store is unreachable the last graphs keep serving and the errors are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from pydantic import ValidationError

from hotwords.config import HotwordsConfig
from hotwords.graph import BiasGraph, GraphState, WeightedPhrase, compile_graph
from hotwords.metrics import COMPILE_SECONDS, GRAPH_NODES, HITS, RELOADS, SYNC_ERRORS
from hotwords.postpass import PhraseCorrector
from hotwords.schema import Entry, HotwordList, normalize_phrase, scope_rank, validate_scope
from hotwords.service import Codec
from hotwords.store import HotwordStore, Subscription

log = logging.getLogger(__name__)

_CACHE_SIZE = 128
INLINE = "inline"  # metrics label of literal phrases passed to `biaser()`
_WORD_EDGE = r"(?<!\w){}(?!\w)"


@dataclass(frozen=True)
class LoadedList:
    record: HotwordList
    graph: BiasGraph


@dataclass(frozen=True)
class ComposedBiaser:
    """The lists in force for one call composed into one graph; a `Biaser` for the decoder."""

    graph: BiasGraph
    key: tuple[tuple[tuple[str, int], ...], tuple[str, ...]]  # ((list, version)...), literal phrases
    sources: Mapping[str, tuple[str, ...]] = field(repr=False)  # phrase -> lists it comes from

    def start(self) -> GraphState:
        return self.graph.start()

    @property
    def phrases(self) -> tuple[str, ...]:
        return self.graph.phrases

    @cached_property
    def corrector(self) -> PhraseCorrector:
        """The transcript post-pass for these phrases."""
        return PhraseCorrector(self.graph.phrases)

    def record_hits(self, phrases: Iterable[str]) -> None:
        """Count recognized phrases (e.g. `GraphState.completed` along the best hypothesis)."""
        for phrase in phrases:
            for name in self.sources.get(phrase, ()):
                HITS.labels(name, phrase).inc()

    def hits_in(self, text: str) -> list[str]:
        """The active phrases that occur as whole words in a transcript (case-insensitive)."""
        folded = normalize_phrase(text)
        return [
            phrase
            for phrase in self.graph.phrases
            if re.search(_WORD_EDGE.format(re.escape(normalize_phrase(phrase))), folded)
        ]


class HotwordRegistry:
    def __init__(self, store: HotwordStore, codec: Codec, config: HotwordsConfig) -> None:
        self._store = store
        self._codec = codec
        self._config = config
        self._loaded: Mapping[str, LoadedList] = MappingProxyType({})
        self._composed: OrderedDict[tuple[tuple[str, int], ...], ComposedBiaser] = OrderedDict()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.sync_errors = 0
        self.connected = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what the store has (if reachable) and follow its changes in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="hotwords-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- what replicas read ------------------------------------------------------------------------------
    @property
    def lists(self) -> Mapping[str, LoadedList]:
        return self._loaded

    def version(self, name: str) -> int | None:
        loaded = self._loaded.get(name)
        return None if loaded is None else loaded.record.version

    async def biaser(
        self, scopes: Sequence[str] = (), lists: Sequence[str] = (), phrases: Sequence[str] = ()
    ) -> ComposedBiaser:
        """One graph for a call: the lists whose scope is `global` or one of `scopes`, the lists named in
        `lists` whatever their scope (a flow node's `@name`), and literal `phrases` (a node's own hot
        words, default boost, first in the prompt).

        Narrower scopes come first in the prompt; a phrase present several times keeps its largest boost.
        Compositions are cached by the (list, version) tuple and the literal phrases they were built from.
        """
        wanted = {"global", *(validate_scope(scope) for scope in scopes)}
        named = set(lists)
        chosen = sorted(
            (
                loaded
                for loaded in self._loaded.values()
                if loaded.record.scope in wanted or loaded.record.name in named
            ),
            key=lambda loaded: (-scope_rank(loaded.record.scope), loaded.record.name),
        )
        inline = tuple(dict.fromkeys(Entry(phrase=phrase).phrase for phrase in phrases))
        key = (tuple((loaded.record.name, loaded.record.version) for loaded in chosen), inline)
        cached = self._composed.get(key)
        if cached is not None:
            self._composed.move_to_end(key)
            return cached
        default = self._config.default_boost
        groups = [(INLINE, [WeightedPhrase(phrase, default, INLINE) for phrase in inline])]
        groups += [(loaded.record.name, self._weighted(loaded.record)) for loaded in chosen]
        merged: dict[str, WeightedPhrase] = {}
        sources: dict[str, list[str]] = {}
        for source, items in groups:
            for item in items:
                norm = normalize_phrase(item.phrase)
                previous = merged.get(norm)
                phrase = item.phrase if previous is None else previous.phrase
                if previous is None or item.boost > previous.boost:
                    group = item.group if previous is None else previous.group
                    merged[norm] = WeightedPhrase(phrase, item.boost, group)
                sources.setdefault(phrase, []).append(source)
        if len(chosen) == 1 and not inline:
            graph = chosen[0].graph
        else:
            graph = await self._compile(list(merged.values()))
        composed = ComposedBiaser(
            graph, key, MappingProxyType({phrase: tuple(names) for phrase, names in sources.items()})
        )
        self._composed[key] = composed
        while len(self._composed) > _CACHE_SIZE:
            self._composed.popitem(last=False)
        return composed

    # -- following the store -----------------------------------------------------------------------------
    async def resync(self) -> None:
        """Bring every list to the store's current version (and drop deleted ones). Raises when the store
        is unreachable; the background loop counts that and retries."""
        current = await self._store.current_versions()
        for name in set(self._loaded) - set(current):
            await self._apply(name, None, "resync")
        for name, version in current.items():
            if self.version(name) != version:
                try:
                    await self.reload(name, "resync")
                except ValidationError as exc:
                    # One unreadable record must not keep the other lists from updating.
                    self._count_error("record")
                    log.error("hot-word list %s: stored record is invalid: %s", name, exc)

    async def reload(self, name: str, cause: str = "event") -> None:
        record = await self._store.get(name)
        if record is None or record.version != self.version(name):
            await self._apply(name, record, cause)

    async def _apply(self, name: str, record: HotwordList | None, cause: str) -> None:
        graph = None if record is None else await self._compile(self._weighted(record))
        async with self._lock:
            current = self.version(name)
            if record is not None and current is not None and current > record.version:
                return  # a newer version was applied while this one compiled
            loaded = dict(self._loaded)
            if record is None or graph is None:
                if loaded.pop(name, None) is not None:
                    GRAPH_NODES.remove(name)
            else:
                loaded[name] = LoadedList(record, graph)
                GRAPH_NODES.labels(name).set(graph.node_count)
            self._loaded = MappingProxyType(loaded)
        RELOADS.labels(cause).inc()
        log.info("hot-word list %s now at version %s (%s)", name, None if record is None else record.version, cause)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                subscription = await self._store.subscribe()
                try:
                    # Subscribe first, then resync: nothing announced in between can be missed.
                    await self.resync()
                    self.connected.set()
                    delay = 0.2
                    deadline = loop.time() + self._config.resync_seconds
                    while True:
                        event = await subscription.get(wait_seconds=max(0.0, min(1.0, deadline - loop.time())))
                        if event is not None:
                            await self.reload(event.name)
                        if loop.time() >= deadline:
                            await self.resync()
                            deadline = loop.time() + self._config.resync_seconds
                finally:
                    self.connected.clear()
                    await _quietly_close(subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store is unreachable or answered garbage: keep serving the last graphs and retry.
                self._count_error("store")
                log.warning("hot-word store unavailable (%s: %s); retrying in %.1fs", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._config.reconnect_max_seconds)

    def _count_error(self, source: str) -> None:
        self.sync_errors += 1
        SYNC_ERRORS.labels(source).inc()

    # -- compiling ---------------------------------------------------------------------------------------
    def _weighted(self, record: HotwordList) -> list[WeightedPhrase]:
        default = self._config.default_boost
        return [WeightedPhrase(e.phrase, default if e.boost is None else e.boost, record.name) for e in record.entries]

    async def _compile(self, phrases: list[WeightedPhrase]) -> BiasGraph:
        def build() -> BiasGraph:
            graph, issues = compile_graph(
                phrases,
                self._codec.encode,
                self._codec.decode,
                first_piece_boost=self._config.first_piece_boost,
                max_tokens=self._config.max_phrase_tokens,
                prompt_max_chars=self._config.prompt_max_chars,
            )
            for issue in issues:
                log.warning("hot phrase %r left out of the graph: %s", issue.phrase, issue.detail)
            return graph

        if len(phrases) > self._config.executor_min_phrases:
            graph = await asyncio.get_running_loop().run_in_executor(None, build)
        else:
            graph = build()
        COMPILE_SECONDS.observe(graph.compile_seconds)
        return graph


async def _quietly_close(subscription: Subscription) -> None:
    try:
        await subscription.close()
    except Exception as exc:
        log.debug("closing hot-word subscription failed: %s", exc)
