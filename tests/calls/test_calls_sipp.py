"""sipp callers against a running voicenav: speech routes to the intent's queue, a key press is
transferred by REFER to the queue's URI, speech over the welcome prompt cuts it short, and a caller's
BYE mid-prompt ends the call."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from callers import Running, manifest, poll, running_service, sipp_call, sipp_scenario, ulaw_file

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

TECH_SUPPORT_URI = "sip:tech_support@127.0.0.1"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Running]:
    async with running_service(calls={"queue_uris": {"tech_support": TECH_SUPPORT_URI}}) as running:
        yield running


def _caller(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


# dev001 names a product of the main menu's hot words: tiny.en alone hears "Zentrix and Lamentive".
@pytest.mark.parametrize("utterance", ["dev031", "dev038", "dev001"])
async def test_spoken_request_routes_to_its_queue(server: Running, utterance: str, tmp_path: Path) -> None:
    expected = manifest()[utterance]["intent"]
    caller = _caller(utterance)
    audio = ulaw_file(utterance, tmp_path)
    barge_ins = await server.metric("voicenav_barge_ins_total", transport="sip", by="speech")
    scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{audio},1,0"/>')
    rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=40)
    assert rc == 0, out
    record = await server.record_of(caller)
    assert record["transport"] == "sip"
    assert record["outcome"] == {"route": expected}, record
    spoken = [t for t in record["turns"] if t["event"] == "utterance"]
    assert spoken and spoken[-1]["intent"] == expected
    assert spoken[-1]["transcript"]
    for phrase in manifest()[utterance]["hotwords"]:
        assert phrase in spoken[-1]["transcript"], spoken
    assert spoken[-1]["latency_ms"] is not None and 0 < spoken[-1]["latency_ms"] < 5000
    assert record["turns"][0]["event"] == "call_started" and record["turns"][0]["prompts"]
    assert record["started_at"] <= record["ended_at"]
    # The caller spoke straight away, over the welcome prompt: barge-in stopped it.
    assert await server.metric("voicenav_barge_ins_total", transport="sip", by="speech") == barge_ins + 1


async def test_key_press_transfers_to_the_queue_uri(server: Running, tmp_path: Path) -> None:
    caller = _caller("dtmf")
    scenario = sipp_scenario(tmp_path, caller, '<exec play_dtmf="2,120"/>', refer_to=TECH_SUPPORT_URI)
    rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=40)
    assert rc == 0, out  # the scenario checks REFER's Refer-To and answers the BYE
    record = await server.record_of(caller)
    assert record["outcome"] == {"route": "tech_support"}, record
    keyed = [t for t in record["turns"] if t["event"] == "dtmf"]
    assert keyed and keyed[-1]["dtmf"] == "2"


async def test_caller_hanging_up_mid_prompt_ends_the_call(server: Running, tmp_path: Path) -> None:
    caller = _caller("bye")
    audio = ulaw_file("dev031", tmp_path, lead_s=3.0)  # silent while the prompt plays
    scenario = sipp_scenario(tmp_path, caller, f'<exec rtp_stream="{audio},1,0"/>', hangup_after_ms=1500)
    rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=20)
    assert rc == 0, out
    record = await server.record_of(caller)
    assert record["outcome"] == {"hangup": "bye"}, record

    async def idle() -> bool:
        return server.service.active_calls == 0

    await poll(idle, 5)  # session, RTP session and call are all released
