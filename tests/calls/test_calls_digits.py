"""Account numbers said by a real sipp caller at the demo flow's account-number node: Allison's
recorded digits strung into 6-10 digit numbers, in one go, with a 700 ms breath between digit groups,
and with a breath longer than the node's end-of-speech pause (1.2 s), which makes each group an
utterance of its own. The number the dialog reads back must be the number said, every digit of it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from callers import ROOT, Running, running_service, sipp_call, sipp_scenario

from asr_engine.audio.g711 import ulaw_encode
from bench.digit_sets import RATE, allison

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]

# (digit groups, silence between them in seconds)
NUMBERS = [
    (("8264053",), 0.0),
    (("826", "4053"), 0.7),
    (("40", "5531", "9"), 0.7),
    (("826", "4053"), 1.6),
    (("3050", "138"), 1.6),
]
PROMPTS_S = 7.0  # "Sure, I can help with your account." and the account-number prompt, heard out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    # The demo flow, its account numbers kept in the call record so that the test can read them back.
    flow = tmp_path_factory.mktemp("flow") / "demo.yaml"
    flow.write_text((ROOT / "dialog/flows/demo.yaml").read_text().replace("storable: false", "storable: true"))
    async with running_service(dialog={"flow": flow}) as running:
        yield running


def _number_file(groups: tuple[str, ...], pause_s: float, out: Path) -> Path:
    """The number as raw μ-law in whole 160-byte packets, with the silence a phone keeps sending after it."""
    pcm = np.concatenate([allison(groups, pause_s), np.zeros(3 * RATE, np.int16)])
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % 160, np.int16)])
    path = out / "number.ulaw"
    path.write_bytes(ulaw_encode(pcm))
    return path


@pytest.mark.parametrize(("groups", "pause_s"), NUMBERS, ids=[f"{'-'.join(g)}@{p:g}s" for g, p in NUMBERS])
async def test_spoken_account_number_is_read_back_whole(
    server: Running, groups: tuple[str, ...], pause_s: float, tmp_path: Path
) -> None:
    caller = f"digits-{uuid.uuid4().hex[:8]}"
    audio = _number_file(groups, pause_s, tmp_path)
    seconds = len(audio.read_bytes()) / RATE
    # "4" for the account node, the number once its prompt has played, then "1": yes, that is right.
    media = (
        '<exec play_dtmf="4,120"/></action></nop>\n'
        f'  <pause milliseconds="{int(PROMPTS_S * 1000)}"/>\n'
        f'  <nop><action><exec rtp_stream="{audio},1,0"/></action></nop>\n'
        f'  <pause milliseconds="{int(seconds * 1000) + 2500}"/>\n'
        '  <nop><action><exec play_dtmf="1,120"/>'
    )
    scenario = sipp_scenario(tmp_path, caller, media, timeout_ms=30000)
    rc, out = await sipp_call(scenario, server.sip_port, tmp_path, limit_s=60)
    record = await server.record_of(caller)
    said = "".join(groups)
    heard = [t for t in record["turns"] if t["node"] == "account_number" and t["event"] == "utterance"]
    read_back = [p for t in heard for p in t["prompts"] if p.startswith("I have")]
    assert read_back and read_back[0].startswith(f"I have {' '.join(said)}."), (said, [t["transcript"] for t in heard])
    assert rc == 0, out
    assert record["outcome"] == {"route": "account"}, record
