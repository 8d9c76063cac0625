"""Headless Chromium on the softphone page: speech in, keypad, live events and a prompt back."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from kit_audio import kit_audio
from webrtc_testkit import AUDIO, LOOPBACK, PEERS, WORK, CallHarness, run_bounded, serve, wait_until

from ivr.app.softphone import setup_softphone_routes
from ivr.webrtc.endpoint import WebRtcEndpoint, setup_routes
from ivr.webrtc.offer_guard import OfferGuard, OfferGuardParams

pytestmark = [pytest.mark.peers, pytest.mark.timeout(90)]

DRIVER = PEERS / "webrtc" / "drive_playwright.js"
MIC = AUDIO / "speech48k_lead1500ms.wav"
usable = (
    DRIVER.exists()
    and MIC.exists()
    and shutil.which("node")
    and Path("/usr/bin/chromium").exists()
    and (WORK / "node" / "node_modules" / "playwright-core").exists()
)


def _decode_webm(data: bytes, rate: int = 8000) -> np.ndarray:
    out = []
    with av.open(io.BytesIO(data)) as c:
        rs = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            out += [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
        out += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(out).astype(np.int16)


@pytest.mark.skipif(not usable, reason="chromium / playwright-core / peers audio not installed")
@pytest.mark.parametrize(("codec", "min_rx", "page_hangs_up"), [("opus", 0.8, False), ("PCMU", 0.95, True)])
async def test_softphone_in_headless_chromium(codec: str, min_rx: float, page_hangs_up: bool, tmp_path: Path) -> None:
    """Opus: the IVR hangs up after the caller spoke. PCMU: the page's Hang up ends the call."""
    kit = kit_audio()
    common = kit.common
    # The fake mic plays 1.5 s of silence, then 7.2 s of speech, from getUserMedia on.
    harness = CallHarness(kit.prompt, kit.prompt_rate, record_s=30.0 if page_hangs_up else 9.0, prompt_lead_in_s=1.0)
    endpoint = WebRtcEndpoint(harness, max_calls=2, host_addresses=LOOPBACK)
    uploads: list[dict[str, Any]] = []

    async def upload(request: web.Request) -> web.Response:
        got: dict[str, Any] = {}
        async for part in await request.multipart():
            got[part.name] = await part.read()
        uploads.append(got)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    setup_routes(app, endpoint, guard=OfferGuard(OfferGuardParams()))
    setup_softphone_routes(app)
    app.router.add_post("/test/upload", upload)  # the test's sink for what the page heard and showed
    t0 = time.monotonic()
    async with serve(app) as url:
        hangup_ms = 10000 if page_hangs_up else 25000
        page = f"{url}/?autotest=1&hangup_after_ms={hangup_ms}&dtmf=1%23&dtmf_at_ms=1500&upload=/test/upload" + (
            "&codec=PCMU" if codec == "PCMU" else ""
        )
        rc, out = await run_bounded("node", DRIVER, page, MIC, "40000", limit_s=60, env={"PEERS_TMP": str(tmp_path)})
        await asyncio.wait_for(harness.done.wait(), 5)
    wall = time.monotonic() - t0
    assert rc == 0, out
    assert len(uploads) == 1, out
    report = json.loads(uploads[0]["report"])

    # the call as the IVR saw it
    assert harness.info is not None
    assert harness.info.codec == {"opus": "opus/48000", "PCMU": "PCMU/8000"}[codec]
    assert harness.digits == ["1", "#"]
    assert harness.play_result is True and harness.hangup is not None and harness.hangup.reason == "bye"
    rx_corr, rx_lag = kit.speech_received(harness)

    # the call as the page showed it
    lines = [(line["kind"], line["text"]) for line in report["lines"]]
    assert lines[0] == ("ivr", "Welcome to voicenav. How can I help?")
    assert ("dtmf", "1") in lines and ("dtmf", "#") in lines
    assert lines.count(("route", "Transferring you to billing")) == 2
    if page_hangs_up:
        assert (report["endedBy"], report["status"]) == ("local", "Call ended")
    else:
        assert (report["endedBy"], report["reason"]) == ("remote", "bye")
        assert report["status"] == "The call was ended by the service"
        assert lines[-1] == ("caller", "I have a question about my bill")
        assert report["events"][-1] == {"type": "hangup", "reason": "bye"}

    # what the page heard
    heard = _decode_webm(uploads[0]["audio"])
    prompt8k = common.resample(kit.prompt, kit.prompt_rate, 8000)
    seg_corr = common.segment_correlation(prompt8k, heard)
    print(
        f"\nchromium {codec}: server rx corr {rx_corr:.4f} (lag {rx_lag / 8000:.3f} s), page heard prompt "
        f"segment corr {seg_corr:.4f}, inbound stats {report['stats'].get('inbound')}, wall {wall:.1f} s"
    )
    assert rx_corr > min_rx
    assert seg_corr > 0.6
    await wait_until(lambda: endpoint.active_calls == 0 and not endpoint.legs(), 5, "call released")
