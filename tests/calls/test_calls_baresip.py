"""baresip, a real softphone, calls voicenav: it hears the welcome prompt (intelligibly: our own
recognizer finds its words in what baresip recorded), says what it wants and is routed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from callers import Running, manifest, running_service, wav_8k

from asr_engine.audio.wav import read_wav
from asr_engine.transcribe import transcribe_audio
from tests.ports import TCP, UDP, free_ports

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed"),
]

MODULE_PATH = next(
    (
        d
        for d in (
            "/usr/lib/baresip/modules",
            "/usr/lib/x86_64-linux-gnu/baresip/modules",
            "/usr/lib/aarch64-linux-gnu/baresip/modules",
            "/usr/local/lib/baresip/modules",
        )
        if Path(d, "g711.so").exists()
    ),
    "/usr/lib/baresip/modules",
)
# The peers kit's config template with every port chosen per run (never the kit's fixed ones), and
# sndfile recording what baresip hears (dump-*-dec.wav) into {out}.
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
snd_path {out}
module_path {module_path}
module g711.so
module aufile.so
module alsa.so
module sndfile.so
module_tmp account.so
module_app menu.so
"""
WELCOME_WORDS = ("thanks", "calling", "few", "words")
LEAD_S = 6.0  # the caller listens to the start of the welcome prompt before speaking


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Running]:
    async with running_service() as running:
        yield running


async def test_baresip_hears_the_prompt_and_is_routed(server: Running, tmp_path: Path) -> None:
    utterance = "dev031"
    expected = manifest()[utterance]["intent"]
    wav = wav_8k(utterance, tmp_path, lead_s=LEAD_S, tail_s=8.0)
    cfg, out = tmp_path / "cfg", tmp_path / "heard"
    cfg.mkdir()
    out.mkdir()
    rtp = free_ports(8, (UDP, TCP))
    (cfg / "config").write_text(
        CONFIG.format(
            sip_port=free_ports(1, (UDP, TCP)), wav=wav, rtp_lo=rtp, rtp_hi=rtp + 7, out=out, module_path=MODULE_PATH
        )
    )
    (cfg / "accounts").write_text("<sip:baresip@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1\n")
    (cfg / "contacts").write_text("")
    log_path = tmp_path / "baresip.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            "baresip",
            "-f",
            str(cfg),
            "-e",
            f"/dial sip:ivr@127.0.0.1:{server.sip_port}",
            "-t",
            "40",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            # The IVR routes the call, then hangs up: baresip closes its recording with the call.
            record = await server.record_of("baresip", within=40)
            await asyncio.sleep(0.5)
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    log_text = log_path.read_text(errors="replace")[-3000:]
    assert record["outcome"] == {"route": expected}, (record, log_text)
    heard = sorted(out.glob("dump-*-dec.wav"))
    assert heard, log_text
    service = server.service
    assert service.recognizer is not None and service.vad is not None
    result = await asyncio.to_thread(transcribe_audio, service.recognizer, service.vad, read_wav(str(heard[-1])))
    text = result.text.lower()
    assert all(w in text for w in WELCOME_WORDS), text
    assert "billing" in text, text  # the answer to the request: "Okay, I'll connect you with billing."
