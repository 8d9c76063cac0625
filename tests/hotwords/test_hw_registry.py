from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from hotword_helpers import Instance, auth
from prometheus_client import REGISTRY

from hotwords.codec import TokenCodec
from hotwords.config import HotwordsConfig
from hotwords.graph import GraphState
from hotwords.registry import HotwordRegistry
from hotwords.schema import Entry, HotwordListIn
from hotwords.store import MemoryHotwordStore, RedisHotwordStore

Make = Callable[..., Awaitable[Instance]]


async def until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition` held (polling every 10 ms); fails after `seconds`."""
    began = time.perf_counter()
    while not condition():
        assert time.perf_counter() - began < seconds, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.perf_counter() - began


def completes(state: GraphState, codec: TokenCodec, text: str) -> list[str]:
    """Phrases completed along the tokens of `text`."""
    done: list[str] = []
    for token in codec.encode(text):
        state, _ = state.advance(token)
        done.extend(state.completed)
    return done


async def test_an_update_through_one_replica_reaches_the_other(make_instance: Make, codec: TokenCodec) -> None:
    a = await make_instance()
    b = await make_instance()
    await a.registry.start()
    await b.registry.start()
    await asyncio.wait_for(b.registry.connected.wait(), 5)
    assert (await a.put("products", {"entries": [{"phrase": "Zentrix Unlimited"}]})).status == 201
    await until(lambda: b.registry.version("products") == 1, 2.0)
    old = await b.registry.biaser(["tenant:acme"])
    assert old.phrases == ("Zentrix Unlimited",)

    began = time.perf_counter()
    resp = await a.put("products", {"entries": [{"phrase": "Kestrava router"}, {"phrase": "NovaPay wallet"}]})
    assert resp.status == 200
    await until(lambda: b.registry.version("products") == 2, 2.0)
    seconds = time.perf_counter() - began
    print(f"PUT on one replica to new graph on the other: {seconds * 1000:.1f} ms")
    assert seconds < 1.0
    new = await b.registry.biaser(["tenant:acme"])
    assert new.phrases == ("Kestrava router", "NovaPay wallet")
    assert completes(new.start(), codec, " my Kestrava router") == ["Kestrava router"]
    # A decode that started before the swap keeps its graph.
    assert completes(old.start(), codec, " Zentrix Unlimited") == ["Zentrix Unlimited"]

    began = time.perf_counter()
    resp = await a.client.post("/v1/hotwords/products/rollback?version=1", headers=auth("tok-alice"))
    assert resp.status == 200
    await until(lambda: b.registry.version("products") == 3, 2.0)
    assert time.perf_counter() - began < 1.0
    assert (await b.registry.biaser([])).phrases == ("Zentrix Unlimited",)

    assert (await a.client.delete("/v1/hotwords/products", headers=auth("tok-alice"))).status == 200
    await until(lambda: "products" not in b.registry.lists, 2.0)
    assert (await b.registry.biaser([])).phrases == ()


async def test_composition_by_scope_is_cached_by_versions(make_instance: Make, codec: TokenCodec) -> None:
    node = await make_instance()
    for name, scope, phrases in [
        ("base", "global", ["Zentrix Unlimited", "Velmont Fiber"]),
        ("acme", "tenant:acme", ["Kestrava router", "velmont fiber"]),
        ("menu", "node:sales/menu", ["Orbilo Family"]),
        ("other", "tenant:other", ["Qubitel roaming"]),
    ]:
        body = {
            "scope": scope,
            "entries": [{"phrase": p, "boost": 5 if name == "acme" else 2} for p in phrases],
        }
        assert (await node.put(name, body)).status == 201
    await node.registry.resync()
    biaser = await node.registry.biaser(["tenant:acme", "flow:sales", "node:sales/menu", "call:42"])
    # Narrowest scope first (for the prompt); a phrase present twice keeps its largest boost.
    assert biaser.phrases == ("Orbilo Family", "Kestrava router", "velmont fiber", "Zentrix Unlimited")
    assert biaser.start().prompt_text().startswith("Orbilo Family, Kestrava router")
    assert biaser.key == ((("menu", 1), ("acme", 1), ("base", 1)), ())
    assert await node.registry.biaser(["node:sales/menu", "tenant:acme"]) is biaser
    state = biaser.start()
    for token in codec.encode(" Velmont")[:2]:
        state, _ = state.advance(token)
    assert max(state.boosts().values()) == 5.0
    # A flow node's own phrases and its `@list` references, whatever the lists' scopes.
    node_biaser = await node.registry.biaser(["flow:sales"], lists=["other"], phrases=["NovaPay  wallet"])
    assert node_biaser.phrases == ("NovaPay wallet", "Qubitel roaming", "Zentrix Unlimited", "Velmont Fiber")
    assert node_biaser.corrector.correct("my nova pay wallet")[0] == "my NovaPay wallet"
    with pytest.raises(ValueError, match="invalid scope"):
        await node.registry.biaser(["planet:mars"])

    before = (
        REGISTRY.get_sample_value("voicenav_hotwords_hits_total", {"list": "acme", "phrase": "Kestrava router"}) or 0.0
    )
    biaser.record_hits(biaser.hits_in("my kestrava router is down"))
    after = REGISTRY.get_sample_value("voicenav_hotwords_hits_total", {"list": "acme", "phrase": "Kestrava router"})
    assert after == before + 1
    assert biaser.hits_in("a Kestrava routers shop") == []


async def test_large_lists_compile_in_a_worker_thread(make_instance: Make) -> None:
    node = await make_instance(executor_min_phrases=10)
    body = {"entries": [{"phrase": f"Zentrix model {n}"} for n in range(1500)]}
    assert (await node.put("big", body)).status == 201
    began = time.perf_counter()
    await node.registry.resync()
    print(f"reloaded 1500 phrases in {(time.perf_counter() - began) * 1000:.0f} ms")
    loaded = node.registry.lists["big"]
    assert len(loaded.graph.phrases) == 1500
    nodes = REGISTRY.get_sample_value("voicenav_hotwords_graph_nodes", {"list": "big"})
    assert nodes == loaded.graph.node_count


class RedisProxy:
    """A TCP relay in front of the real Redis that a test can take down and bring back on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self._writers.discard(writer)

        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def test_redis_outage_keeps_the_last_graphs(prefix: str, codec: TokenCodec) -> None:
    proxy = RedisProxy()
    await proxy.up()
    config = HotwordsConfig(resync_seconds=0.2, reconnect_max_seconds=0.2)
    store = RedisHotwordStore.connect(f"redis://127.0.0.1:{proxy.port}/0", prefix)
    await store.put("products", HotwordListIn(entries=[Entry(phrase="Zentrix Unlimited")]), "alice")
    registry = HotwordRegistry(store, codec, config)
    await registry.start()
    try:
        await asyncio.wait_for(registry.connected.wait(), 5)
        assert registry.version("products") == 1
        sample = ("voicenav_hotwords_resync_errors_total", {"source": "store"})
        errors_before = REGISTRY.get_sample_value(*sample) or 0.0

        await proxy.down()
        await until(lambda: registry.sync_errors >= 3, 5.0)
        assert not registry.connected.is_set()
        assert registry.version("products") == 1
        assert (await registry.biaser([])).phrases == ("Zentrix Unlimited",)
        assert REGISTRY.get_sample_value(*sample) >= errors_before + 3

        # Redis comes back with a change made meanwhile (missed by pub/sub): the registry reconnects and
        # catches up by resyncing.
        other = RedisHotwordStore(aioredis.Redis.from_url("redis://127.0.0.1:6379/0"), prefix)
        await other.put("products", HotwordListIn(entries=[Entry(phrase="Kestrava router")]), "bob")
        await other.close()
        await proxy.up()
        seconds = await until(lambda: registry.version("products") == 2, 5.0)
        print(f"caught up {seconds * 1000:.0f} ms after Redis came back")
        assert (await registry.biaser([])).phrases == ("Kestrava router",)
    finally:
        await registry.stop()
        await store.close()
        await proxy.down()


async def test_unreachable_at_start_then_serves_nothing_without_crashing(codec: TokenCodec, prefix: str) -> None:
    store = RedisHotwordStore.connect("redis://127.0.0.1:1/0", prefix)
    registry = HotwordRegistry(store, codec, HotwordsConfig(reconnect_max_seconds=0.1))
    await registry.start()
    try:
        await until(lambda: registry.sync_errors >= 2, 5.0)
        assert (await registry.biaser(["tenant:acme"])).phrases == ()
    finally:
        await registry.stop()
        await store.close()


async def test_memory_store_registry(codec: TokenCodec) -> None:
    store = MemoryHotwordStore()
    registry = HotwordRegistry(store, codec, HotwordsConfig())
    await registry.start()
    try:
        await asyncio.wait_for(registry.connected.wait(), 5)
        await store.put("products", HotwordListIn(entries=[Entry(phrase="Orbilo Family")]), "alice")
        await until(lambda: registry.version("products") == 1, 1.0)
        assert (await registry.biaser([])).phrases == ("Orbilo Family",)
    finally:
        await registry.stop()


async def test_a_corrupt_record_does_not_block_the_other_lists(
    prefix: str, codec: TokenCodec, redis_client: aioredis.Redis
) -> None:
    store = RedisHotwordStore(redis_client, prefix)
    await store.put("good", HotwordListIn(entries=[Entry(phrase="Orbilo Family")]), "alice")
    await store.put("bad", HotwordListIn(entries=[Entry(phrase="Velmont Fiber")]), "alice")
    await redis_client.hset(f"{prefix}:list:bad:v", "1", '{"name": "bad", "entries": "garbage"}')
    registry = HotwordRegistry(store, codec, HotwordsConfig())
    sample = ("voicenav_hotwords_resync_errors_total", {"source": "record"})
    before = REGISTRY.get_sample_value(*sample) or 0.0
    await registry.resync()
    assert registry.version("good") == 1 and registry.version("bad") is None
    assert registry.sync_errors == 1
    assert REGISTRY.get_sample_value(*sample) == before + 1
