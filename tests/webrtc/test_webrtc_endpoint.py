"""The offer endpoint, the leg and the softphone page against an in-process aiortc caller (loopback)."""

from __future__ import annotations

import asyncio
import re
import time

import aioice.ice
import numpy as np
import pytest
from aiohttp import ClientSession, web
from aiortc import RTCSessionDescription
from prometheus_client import REGISTRY
from pydantic import ValidationError
from webrtc_testkit import LOOPBACK, InProcessCaller, post_offer, serve, wait_until

from ivr.app.softphone import STATIC_DIR, setup_softphone_routes
from ivr.calls.admission import Admission
from ivr.calls.ratelimit import BucketParams
from ivr.media.events import AudioFrame, DtmfDigit, Hangup, MediaEvent
from ivr.webrtc.endpoint import CallInfo, WebRtcConfig, WebRtcEndpoint, setup_routes
from ivr.webrtc.ice import pinned_host_addresses
from ivr.webrtc.leg import WebRtcLeg
from ivr.webrtc.offer_guard import OfferGuard, OfferGuardParams
from ivr.webrtc.tracks import FRAME_SAMPLES, OUT_RATE, PlayoutTrack

pytestmark = pytest.mark.timeout(60)


def _tone(seconds: float, rate: int = 8000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Collector:
    """on_call that keeps every event until the hang-up; `script` runs alongside with the leg."""

    def __init__(self, script=None) -> None:
        self.events: list[MediaEvent] = []
        self.legs: list[WebRtcLeg] = []
        self.infos: list[CallInfo] = []
        self.script = script
        self.ended = asyncio.Event()
        self.changed = asyncio.Event()

    async def wait_for(self, kind: type, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not self.of(kind):
                self.changed.clear()
                await self.changed.wait()

    async def __call__(self, leg: WebRtcLeg, info: CallInfo) -> None:
        self.legs.append(leg)
        self.infos.append(info)
        task = asyncio.create_task(self.script(leg)) if self.script else None
        try:
            async with asyncio.timeout(20):
                while True:
                    ev = await leg.recv()
                    self.events.append(ev)
                    self.changed.set()
                    if isinstance(ev, Hangup):
                        break
        finally:
            if task is not None:
                await task
            self.ended.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def _app(on_call, max_calls: int = 4, retry_after_s: int = 5, **kw) -> tuple[web.Application, WebRtcEndpoint]:
    config = WebRtcConfig.model_validate({"host_addresses": list(LOOPBACK), **kw})
    endpoint = WebRtcEndpoint.from_config(on_call, config, Admission(max_calls, retry_after_s))
    app = web.Application()
    # these tests place many calls from one address in a short time: no limit on offer tokens here
    guard = OfferGuard(OfferGuardParams(token_rate=BucketParams(rate_per_s=1000, burst=1000)))
    setup_routes(app, endpoint, guard=guard)
    setup_softphone_routes(app)
    return app, endpoint


async def _assert_cleaned_up(endpoint: WebRtcEndpoint, legs: list[WebRtcLeg], baseline: set) -> None:
    await wait_until(lambda: endpoint.active_calls == 0 and not endpoint.legs(), 5, "calls released")
    for leg in legs:
        assert leg.ended
        assert leg._pc.connectionState == "closed"
        assert not leg._tasks
    await wait_until(
        lambda: not (asyncio.all_tasks() - baseline - {asyncio.current_task()}), 5, "no leftover asyncio tasks"
    )


async def test_malformed_offers_are_400_and_counted() -> None:
    app, endpoint = await _app(Collector())
    caller = InProcessCaller()
    good = await caller.offer_sdp()
    await caller.close()
    no_audio = re.sub(r"m=audio .*?(?=m=application)", "", good, flags=re.S)
    lan_only = re.sub(r"(a=candidate:\S+ \d+ \S+ \d+ )127\.0\.0\.1", r"\g<1>192.0.2.7", good)
    sendonly = good.replace("a=sendrecv", "a=sendonly", 1)
    cases = [
        (b"{not json", "malformed-json"),
        (b'{"sdp": "v=0"}', "invalid-body"),
        (b'{"sdp": "v=0", "type": "answer"}', "invalid-body"),
        (b'{"sdp": "this is not sdp", "type": "offer"}', "no-audio"),
        (None, "invalid-sdp", re.sub(r"m=audio \d+ ", "m=audio nine ", good)),
        (None, "invalid-sdp", re.sub(r"a=ice-ufrag:.*\r\n", "", good)),
        (None, "no-audio", no_audio),
        (None, "no-candidates", lan_only),
        (None, "audio-direction", sendonly),
    ]
    async with serve(app) as url:
        for raw, reason, *sdp in cases:
            before = _metric("voicenav_webrtc_offer_failures_total", reason=reason)
            body = {"sdp": sdp[0], "type": "offer"} if sdp else None
            status, resp = await post_offer(url, body, raw=raw)
            assert (status, resp.get("error")) == (400, reason), (reason, resp)
            assert _metric("voicenav_webrtc_offer_failures_total", reason=reason) == before + 1
    assert endpoint.active_calls == 0


async def test_capacity_then_draining_refuse_with_503_and_retry_after() -> None:
    baseline = asyncio.all_tasks()
    collector = Collector()
    app, endpoint = await _app(collector, max_calls=1, retry_after_s=7)
    first, second, third = InProcessCaller(), InProcessCaller(), InProcessCaller()
    async with serve(app) as url:
        status, body = await first.call(url)
        assert status == 200 and body["type"] == "answer" and len(body["call_id"]) == 32
        assert re.search(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 ", body["sdp"])
        assert not re.search(r"a=candidate:\S+ \d+ udp \d+ (?!127\.)", body["sdp"])  # loopback only
        status, body = await second.call(url)
        assert (status, body["error"], body["_retry_after"]) == (503, "capacity", "7")

        await first.wait_open()
        first.channel.send('{"type": "hangup"}')
        await asyncio.wait_for(collector.ended.wait(), 5)
        assert collector.events[-1] == Hangup("bye")
        await wait_until(lambda: endpoint.active_calls == 0, 5, "slot freed after hang-up")

        endpoint.start_draining()
        status, body = await third.call(url)
        assert (status, body["error"], body["_retry_after"]) == (503, "draining", "7")
        for c in (first, second, third):
            await c.close()
        await _assert_cleaned_up(endpoint, collector.legs, baseline)


async def test_keypad_events_and_caller_hangup_over_the_data_channel() -> None:
    baseline = asyncio.all_tasks()

    async def script(leg: WebRtcLeg) -> None:
        leg.send_event({"type": "prompt", "text": "Say what you need"})  # before the channel opens
        await collector.wait_for(DtmfDigit)
        leg.send_event({"type": "route", "queue": "sales"})

    collector = Collector(script)
    app, endpoint = await _app(collector)
    caller = InProcessCaller(codec="opus")
    rejected = _metric("voicenav_webrtc_datachannel_rejected_total", reason="invalid")
    not_text = _metric("voicenav_webrtc_datachannel_rejected_total", reason="not-text")
    too_large = _metric("voicenav_webrtc_datachannel_rejected_total", reason="too-large")
    counted = ("voicenav_webrtc_offers_total", "voicenav_webrtc_connect_seconds_count")
    counts = {m: _metric(m) for m in counted}
    byes = _metric("voicenav_webrtc_hangups_total", reason="bye")
    answers = _metric("voicenav_webrtc_answers_total", codec="opus")
    active = _metric("voicenav_active_calls", transport="webrtc")  # a shared gauge: other tests' calls
    async with serve(app) as url:
        status, _ = await caller.call(url)
        assert status == 200
        caller.speak(_tone(1.0), 8000)
        await caller.wait_open()
        assert (await caller.wait_event("prompt"))["text"] == "Say what you need"
        caller.channel.send('{"type": "dtmf", "digit": "5"}')
        caller.channel.send('{"type": "dtmf", "digit": "55"}')  # not one digit: ignored, counted
        caller.channel.send("not json")
        caller.channel.send(b'{"type": "dtmf", "digit": "7"}')  # binary: not the protocol
        caller.channel.send('{"type": "dtmf", "digit": "7", "pad": "' + "x" * 2000 + '"}')
        caller.channel.send('{"type": "dtmf", "digit": "#"}')
        assert (await caller.wait_event("route"))["queue"] == "sales"
        await asyncio.sleep(0.8)
        caller.channel.send('{"type": "hangup"}')
        await asyncio.wait_for(collector.ended.wait(), 5)
        await caller.close()

    assert collector.of(DtmfDigit) == [DtmfDigit("5", "datachannel"), DtmfDigit("#", "datachannel")]
    assert collector.events[-1] == Hangup("bye")
    assert _metric("voicenav_webrtc_datachannel_rejected_total", reason="invalid") == rejected + 2
    assert _metric("voicenav_webrtc_datachannel_rejected_total", reason="not-text") == not_text + 1
    assert _metric("voicenav_webrtc_datachannel_rejected_total", reason="too-large") == too_large + 1
    assert {m: _metric(m) - v for m, v in counts.items()} == dict.fromkeys(counts, 1.0)
    assert _metric("voicenav_webrtc_hangups_total", reason="bye") == byes + 1
    assert _metric("voicenav_webrtc_answers_total", codec="opus") == answers + 1
    # The call's slot is given back once its teardown has run, which the hangup event does not wait for.
    for _ in range(50):
        if _metric("voicenav_active_calls", transport="webrtc") == active:
            break
        await asyncio.sleep(0.1)
    assert _metric("voicenav_active_calls", transport="webrtc") == active
    frames = collector.of(AudioFrame)
    assert len(frames) > 25  # > 0.5 s of 20 ms frames
    assert all(f.sample_rate == 16000 and f.pcm.dtype == np.int16 and f.pcm.ndim == 1 for f in frames)
    heard = np.concatenate([f.pcm for f in frames]).astype(np.float64)
    assert np.sqrt(np.mean(heard**2)) > 1000  # the tone, not silence
    assert collector.infos[0].codec == "opus/48000"
    await _assert_cleaned_up(endpoint, collector.legs, baseline)


async def test_server_hangup_after_barge_in_reaches_the_caller() -> None:
    baseline = asyncio.all_tasks()
    timings: dict[str, float] = {}

    async def script(leg: WebRtcLeg) -> None:
        await collector.wait_for(AudioFrame)  # media flows: the outbound track is being pulled
        play = asyncio.create_task(leg.play(_tone(3.0), 8000))
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        leg.stop_playback()  # barge-in
        timings["play_result"] = await play
        timings["cut_s"] = time.monotonic() - t0
        timings["after_stop"] = await leg.play(_tone(0.2), 8000)  # a new prompt still plays
        abandoned = asyncio.create_task(leg.play(_tone(3.0), 8000))
        await asyncio.sleep(0.3)
        abandoned.cancel()  # the session gave up on it: the prompt must stop too
        await asyncio.gather(abandoned, return_exceptions=True)
        await asyncio.sleep(0.6)
        await leg.close("bye")

    collector = Collector(script)
    app, endpoint = await _app(collector)
    caller = InProcessCaller(codec="PCMU")
    async with serve(app) as url:
        status, _ = await caller.call(url)
        assert status == 200
        await asyncio.wait_for(collector.ended.wait(), 10)
        assert (await caller.wait_event("hangup"))["reason"] == "bye"
        await asyncio.wait_for(caller.recorder.ended.wait(), 5)  # the server's track ended
        await caller.close()

    assert timings["play_result"] is False and timings["cut_s"] < 0.05
    assert timings["after_stop"] is True
    assert collector.events[-1] == Hangup("bye")
    assert collector.infos[0].codec == "PCMU/8000"
    heard = np.concatenate(caller.recorder.chunks).astype(np.float64)
    loud = np.sqrt(np.convolve(heard**2, np.ones(160) / 160, "valid")) > 1500
    # ~1 s of the first prompt (cut within a frame), 0.2 s of the second, ~0.3 s of the cancelled one
    assert 1.35 < loud.sum() / 8000 < 1.7
    await _assert_cleaned_up(endpoint, collector.legs, baseline)


async def test_no_connection_within_timeout_is_ice_failed() -> None:
    collector = Collector()
    app, endpoint = await _app(collector, connect_timeout_s=0.5)
    caller = InProcessCaller()
    async with serve(app) as url:
        sdp = await caller.offer_sdp()
        status, _ = await post_offer(url, {"sdp": sdp, "type": "offer"})
        assert status == 200  # ... but the caller never applies the answer
        await asyncio.wait_for(collector.ended.wait(), 5)
        await caller.close()
    assert collector.events == [Hangup("ice-failed")]
    await wait_until(lambda: endpoint.active_calls == 0, 5, "slot freed")


async def test_failed_connection_is_ice_failed() -> None:
    collector = Collector()
    app, endpoint = await _app(collector)
    caller = InProcessCaller()
    async with serve(app) as url:
        sdp = await caller.offer_sdp()
        # A fingerprint that does not match the caller's certificate: DTLS fails once ICE connects.
        forged = re.sub(r"a=fingerprint:sha-256 \S+", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), sdp)
        status, body = await post_offer(url, {"sdp": forged, "type": "offer"})
        assert status == 200
        await caller.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        await asyncio.wait_for(collector.ended.wait(), 10)
        await caller.close()
    assert collector.events == [Hangup("ice-failed")]
    await wait_until(lambda: endpoint.active_calls == 0, 5, "slot freed")


async def test_a_failing_call_handler_hangs_up_with_error() -> None:
    async def on_call(leg: WebRtcLeg, info: CallInfo) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("dialog store unreachable")

    before = _metric("voicenav_webrtc_call_handler_errors_total")
    app, endpoint = await _app(on_call)
    caller = InProcessCaller()
    async with serve(app) as url:
        assert (await caller.call(url))[0] == 200
        assert (await caller.wait_event("hangup"))["reason"] == "error"
        await caller.close()
    assert _metric("voicenav_webrtc_call_handler_errors_total") == before + 1
    await wait_until(lambda: endpoint.active_calls == 0, 5, "slot freed")


async def test_app_shutdown_hangs_up_calls() -> None:
    collector = Collector()
    app, endpoint = await _app(collector)
    caller = InProcessCaller()
    async with serve(app) as url:
        assert (await caller.call(url))[0] == 200
        await caller.wait_open()
    assert collector.events[-1] == Hangup("server-shutdown")
    assert endpoint.active_calls == 0 and endpoint.draining
    await caller.close()


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError):
        WebRtcConfig.model_validate({"connect_timeout_s": 0})
    with pytest.raises(ValidationError):
        WebRtcConfig.model_validate({"stun": "stun.example.org"})  # unknown keys are typos
    with pytest.raises(ValidationError):
        WebRtcConfig.model_validate({"host_addresses": ["eth0"]})
    with pytest.raises(ValueError):
        WebRtcEndpoint(Collector(), max_calls=1, host_addresses=["localhost"])  # IP literals only


def test_host_address_pinning_is_scoped() -> None:
    with pinned_host_addresses(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    # outside the block (and for endpoints without host_addresses) aioice behaves as shipped
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)


async def test_playout_track_is_paced_and_silent_when_idle() -> None:
    track = PlayoutTrack()
    pcm = np.arange(FRAME_SAMPLES * 5, dtype=np.int16)
    done = track.start(pcm)
    t0 = time.monotonic()
    frames = [await track.recv() for _ in range(15)]
    elapsed = time.monotonic() - t0
    assert 0.26 < elapsed < 0.6  # 14 frame intervals of 20 ms after the first (loaded CI: slack)
    assert done.result() is True
    got = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert all(f.sample_rate == OUT_RATE and f.samples == FRAME_SAMPLES for f in frames)
    assert np.array_equal(got[: pcm.size], pcm) and not got[pcm.size :].any()
    track.start(pcm)
    with pytest.raises(RuntimeError):
        track.start(pcm)
    track.stop()


async def test_softphone_page_is_self_contained() -> None:
    app, _ = await _app(Collector())
    async with serve(app) as url, ClientSession() as s:
        async with s.get(url + "/") as r:
            html = await r.text()
            assert r.status == 200 and "default-src 'self'" in r.headers["Content-Security-Policy"]
        for asset in ("softphone.js", "softphone.css"):
            async with s.get(f"{url}/softphone/{asset}") as r:
                assert r.status == 200
    assert 'id="call"' in html and 'id="hangup"' in html and 'id="transcript"' in html
    assert sorted(re.findall(r'data-digit="(.)"', html)) == sorted("0123456789*#")
    for f in STATIC_DIR.iterdir():  # nothing fetched from other hosts (closed network)
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", f.read_text()), f
