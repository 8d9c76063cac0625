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
from tests.ports import TCP, UDP, free_ports
from tests.sip.helpers import running_server

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed")]

MODULE_DIRS = [
    "/usr/lib/baresip/modules",
    "/usr/lib/x86_64-linux-gnu/baresip/modules",
    "/usr/lib/aarch64-linux-gnu/baresip/modules",
    "/usr/local/lib/baresip/modules",
]

# Adapted from the peers kit's baresip/cfg/config.template: every port is chosen per test run, so the
# fixed 5062/4444/30000-30100 of the kit are never used and parallel runs do not collide.
CONFIG = """poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:{sip_port}
call_local_timeout 20
call_max_calls 1
audio_buffer 20
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{wav}
ausrc_format s16
auplay_format s16
rtp_ports {rtp_lo}-{rtp_hi}
jitter_buffer_delay 1-10
rtcp_mux no
module_path {module_path}
module g711.so
module aufile.so
module alsa.so
module_tmp account.so
module_app menu.so
"""


def write_config(cfg_dir: Path, wav: Path) -> None:
    module_path = next((d for d in MODULE_DIRS if Path(d, "g711.so").exists()), MODULE_DIRS[0])
    rtp = free_ports(8, (UDP, TCP))
    cfg_dir.mkdir()
    (cfg_dir / "config").write_text(
        CONFIG.format(sip_port=free_ports(1, (UDP, TCP)), wav=wav, rtp_lo=rtp, rtp_hi=rtp + 7, module_path=module_path)
    )
    (cfg_dir / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1,PCMA/8000/1\n")
    (cfg_dir / "contacts").write_text("")


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
    write_config(tmp_path / "cfg", wav)
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
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                "baresip",
                "-f",
                str(tmp_path / "cfg"),
                "-e",
                f"/dial sip:ivr@127.0.0.1:{server.bound_port}",
                "-t",
                "15",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await asyncio.wait_for(ended.wait(), 12)
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 5)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
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
