"""The peers kit's aiortc caller (a separate process) against the endpoint: speech in, prompt out."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web
from kit_audio import kit_audio
from webrtc_testkit import LOOPBACK, PEERS, WORK, CallHarness, run_bounded, serve, token_for_tokenless_peers, wait_until

from ivr.webrtc.endpoint import WebRtcEndpoint, setup_routes
from ivr.webrtc.offer_guard import OfferGuard, OfferGuardParams

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

CLIENT = PEERS / "webrtc" / "aiortc_client.py"
PY = WORK / "venv" / "bin" / "python"


@pytest.mark.skipif(not (CLIENT.exists() and PY.exists()), reason="peers kit not installed (install.sh)")
@pytest.mark.parametrize(
    ("codec", "min_rx", "min_heard"), [("opus", 0.9, 0.9), ("pcmu", 0.99, 0.99), ("pcma", 0.99, 0.99)]
)
async def test_aiortc_caller_speech_in_prompt_out(codec: str, min_rx: float, min_heard: float, tmp_path: Path) -> None:
    kit = kit_audio()
    common = kit.common
    harness = CallHarness(kit.prompt, kit.prompt_rate, record_s=7.4)
    endpoint = WebRtcEndpoint(harness, max_calls=2, host_addresses=LOOPBACK)
    app = web.Application(middlewares=[token_for_tokenless_peers])
    # The kit's client posts to <url>/offer: give it /webrtc as the base URL.
    setup_routes(app, endpoint, guard=OfferGuard(OfferGuardParams()))
    baseline = asyncio.all_tasks()
    t0 = time.monotonic()
    async with serve(app) as url:
        rc, out = await run_bounded(
            PY, CLIENT, "--url", url + "/webrtc", "--codec", codec, "--seconds", "12", "--out", tmp_path, limit_s=40
        )
        assert rc == 0, out
        await asyncio.wait_for(harness.done.wait(), 5)
    wall = time.monotonic() - t0
    report = json.loads(out[out.index("{") :])

    assert harness.info is not None and harness.info.codec.lower().startswith(codec)
    assert harness.play_result is True and harness.hangup is not None
    assert harness.hangup.reason == "bye"  # the harness hung up, well before the client's 12 s
    assert wall < 12
    rx_corr, rx_lag = kit.speech_received(harness)
    heard, heard_rate = common.read_wav(str(tmp_path / "heard.wav"))
    heard_corr, _ = common.best_correlation(
        common.resample(kit.prompt, kit.prompt_rate, 8000), common.resample(heard, heard_rate, 8000)
    )
    print(
        f"\n{codec}: server rx corr {rx_corr:.4f} (lag {rx_lag / 8000:.3f} s), client heard prompt corr "
        f"{heard_corr:.4f}, offer/answer {report['offer_answer_s']} s, wall {wall:.1f} s"
    )
    assert rx_corr > min_rx
    assert heard_corr > min_heard
    await wait_until(lambda: endpoint.active_calls == 0 and not endpoint.legs(), 5, "call released")
    await wait_until(lambda: not (asyncio.all_tasks() - baseline - {asyncio.current_task()}), 5, "no leftover tasks")
