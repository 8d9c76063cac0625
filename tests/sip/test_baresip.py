"""baresip (a real SIP softphone) dials the server: INVITE -> 200 -> ACK, then its BYE when its WAV ends."""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from ivr.sip import IncomingCall
from ivr.sip.sdp import parse_sdp
from tests.baresip import dialing, write_config
from tests.sip.helpers import running_server

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")]


def write_tone(path: Path, seconds: float) -> None:
    t = np.arange(int(8000 * seconds)) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(pcm.tobytes())


async def test_baresip_call(tmp_path: Path, rtp_port: int) -> None:
    wav = tmp_path / "caller.wav"
    write_tone(wav, 1.0)
    cfg = tmp_path / "cfg"
    write_config(cfg, wav, "<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1,PCMA/8000/1")
    calls: list[IncomingCall] = []
    reasons: list[str] = []
    ended = asyncio.Event()

    async def on_call(call: IncomingCall) -> None:
        calls.append(call)
        call.ringing()
        await call.answer("127.0.0.1", rtp_port)
        reasons.append(await call.wait_ended())
        ended.set()

    async with running_server(on_call) as server:
        log_path = tmp_path / "baresip.log"
        async with dialing(cfg, f"sip:ivr@127.0.0.1:{server.bound_port}", 15, log_path):
            await asyncio.wait_for(ended.wait(), 12)
        assert server.active_calls == 0, log_path.read_text(errors="replace")

    assert reasons == ["bye"], log_path.read_text(errors="replace")
    call = calls[0]
    assert call.media.codec == "PCMU" and call.media.payload_type == 0
    assert call.media.telephone_event_pt is not None
    assert call.media.remote_ip == "127.0.0.1"
    offer = parse_sdp(call.invite.body)
    audio = offer.media[0]
    assert [audio.rtpmap.get(int(f), ("", 0))[0].upper() for f in audio.formats[:2]] == ["PCMU", "PCMA"]
    assert audio.rtpmap[call.media.telephone_event_pt][0].lower() == "telephone-event"
