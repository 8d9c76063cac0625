from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hotwords.auth import AdminAuth
from hotwords.codec import TokenCodec
from hotwords.config import HotwordsConfig
from hotwords.parsing import parse_hotword_arg, parse_hotword_file
from hotwords.runtime import REGISTRY_KEY, compile_entries, install


async def test_install_serves_the_api_and_runs_the_registry(codec: TokenCodec, prefix: str) -> None:
    app = web.Application()
    config = HotwordsConfig(key_prefix=prefix)
    registry = install(app, config, codec, AdminAuth({"ops": "t0ken"}), redis="redis://127.0.0.1:6379/0")
    assert app[REGISTRY_KEY] is registry
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        await asyncio.wait_for(registry.connected.wait(), 5)
        resp = await client.put(
            "/v1/hotwords/products",
            data="Zentrix Unlimited\n",
            headers={"Authorization": "Bearer t0ken", "Content-Type": "text/plain"},
        )
        assert resp.status == 201
        for _ in range(100):
            if registry.version("products") == 1:
                break
            await asyncio.sleep(0.01)
        assert (await registry.biaser([])).phrases == ("Zentrix Unlimited",)
        assert (await resp.json())["list"]["updated_by"] == "ops"


def test_compile_entries_from_cli_forms(codec: TokenCodec, tmp_path: Path) -> None:
    path = tmp_path / "hot.txt"
    path.write_text("Kestrava router,6\nNovaPay wallet\n", encoding="utf-8")
    config = HotwordsConfig(default_boost=2.0)
    graph = compile_entries(parse_hotword_file(path) + parse_hotword_arg("Zentrix Unlimited"), codec, config)
    assert graph.phrases == ("Kestrava router", "NovaPay wallet", "Zentrix Unlimited")
    for phrase, boost in (("Kestrava", 6.0), ("NovaPay", 2.0)):
        tokens = codec.encode(" " + phrase)
        state = graph.start()
        assert state.boosts().get(tokens[0], 0.0) == config.first_piece_boost
        state, _ = state.advance(tokens[0])
        assert state.boosts()[tokens[1]] == boost
