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
from tests.baresip import dialing, write_config

pytestmark = [
    pytest.mark.peers,
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("baresip") is None, reason="baresip not installed"),
]

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
    out.mkdir()
    write_config(cfg, wav, "<sip:baresip@127.0.0.1>;regint=0;audio_codecs=PCMU/8000/1", record_to=out)
    log_path = tmp_path / "baresip.log"
    async with dialing(cfg, f"sip:ivr@127.0.0.1:{server.sip_port}", 40, log_path):
        # The IVR routes the call, then hangs up: baresip closes its recording with the call.
        record = await server.record_of("baresip", within=40)
        await asyncio.sleep(0.5)
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
