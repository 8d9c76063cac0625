"""A real peer: sipp answers a call and exchanges RTP with an RtpSession.

sipp's play_dtmf is the awkward sender: RFC 4733 on PT 96 with sipp's own SSRC, after 20 PT 97
"noop" packets; `-rtp_echo` sends our own prompt back, proving the outbound RTP is well formed.
The SIP side here is the few lines of INVITE/ACK/BYE needed to make sipp start its media.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from media_helpers import best_correlation, read_wav

from ivr.media.events import AudioFrame, DtmfDigit
from ivr.media.rtp_session import RtpParameters, RtpSession
from tests.ports import free_ports

AUDIO = Path("/tmp/peers-work/audio")
SCENARIO = Path(__file__).with_name("sipp_uas_media.xml")

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
    pytest.mark.skipif(not (AUDIO / "speech.ulaw").exists(), reason="peers kit audio not generated"),
]


def sip(method_line: str, headers: list[str], body: str = "") -> bytes:
    lines = [method_line, *headers, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


class Uac(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[str] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.responses.put_nowait(data.decode(errors="replace"))


async def response(uac: Uac, method: str, within: float) -> str:
    """The next final response to `method` (provisional ones are skipped)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        msg = await asyncio.wait_for(uac.responses.get(), end - loop.time())
        code = int(msg.split(" ", 2)[1])
        if code >= 200 and re.search(rf"^CSeq:\s*\d+ {method}", msg, re.M | re.I):
            return msg


@asynccontextmanager
async def sipp_call(tmp_path: Path, session: RtpSession, media: str, *args: str) -> AsyncIterator[None]:
    """sipp as the UAS of one call whose SDP points at `session`; hangs up (BYE) on exit and checks
    that sipp saw a clean call."""
    scenario = tmp_path / "uas.xml"
    scenario.write_text(SCENARIO.read_text().replace("@MEDIA@", media))
    sip_port, media_port = free_ports(), free_ports(3)
    loop = asyncio.get_running_loop()
    transport, uac = await loop.create_datagram_endpoint(Uac, local_addr=("127.0.0.1", 0))
    my_port = transport.get_extra_info("sockname")[1]
    sipp = await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(scenario), "-m", "1", "-i", "127.0.0.1", "-p", str(sip_port),
        "-mi", "127.0.0.1", "-mp", str(media_port), "-nostdin", "-timeout", "20s", "-timeout_error", *args,
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    target = ("127.0.0.1", sip_port)

    def via() -> str:
        return f"Via: SIP/2.0/UDP 127.0.0.1:{my_port};branch=z9hG4bK{secrets.token_hex(6)}"

    try:
        common = [
            f"From: <sip:caller@127.0.0.1:{my_port}>;tag={secrets.token_hex(4)}",
            f"Call-ID: {secrets.token_hex(8)}@127.0.0.1",
            f"Contact: <sip:caller@127.0.0.1:{my_port}>",
            "Max-Forwards: 70",
        ]
        sdp = "\r\n".join([
            "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {session.local_port} RTP/AVP 0 96", "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16", "a=ptime:20", "",
        ])  # fmt: skip
        invite = sip(
            f"INVITE sip:ivr@127.0.0.1:{sip_port} SIP/2.0",
            [via(), *common, f"To: <sip:ivr@127.0.0.1:{sip_port}>", "CSeq: 1 INVITE",
             "Content-Type: application/sdp"],
            sdp,
        )  # fmt: skip
        ok = None
        for _ in range(20):  # sipp needs a moment to listen: retransmit like a UAC does
            transport.sendto(invite, target)
            try:
                ok = await response(uac, "INVITE", 0.5)
                break
            except TimeoutError:
                continue
        assert ok is not None and ok.startswith("SIP/2.0 200"), ok
        to = re.search(r"^To:.*$", ok, re.M | re.I)
        remote = re.search(r"^m=audio (\d+)", ok, re.M)
        assert to and remote
        session.update(session.params.model_copy(update={"remote_host": "127.0.0.1", "remote_port": int(remote[1])}))
        dialog = [*common, to[0].strip()]
        transport.sendto(sip(f"ACK sip:ivr@127.0.0.1:{sip_port} SIP/2.0", [via(), *dialog, "CSeq: 1 ACK"]), target)
        yield
        transport.sendto(sip(f"BYE sip:ivr@127.0.0.1:{sip_port} SIP/2.0", [via(), *dialog, "CSeq: 2 BYE"]), target)
        assert (await response(uac, "BYE", 5.0)).startswith("SIP/2.0 200")
        _, err = await asyncio.wait_for(sipp.communicate(), 10)
        assert sipp.returncode == 0, err.decode(errors="replace")
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()
        transport.close()


async def test_sipp_speech_and_play_dtmf_reach_the_session(tmp_path: Path) -> None:
    speech = tmp_path / "speech2s.ulaw"
    speech.write_bytes((AUDIO / "speech.ulaw").read_bytes()[:16000])  # 2 s, a multiple of 160 bytes
    media = (
        f'<nop><action><exec rtp_stream="{speech},1,0"/></action></nop>\n'
        '  <pause milliseconds="2300"/>\n'
        '  <nop><action><exec play_dtmf="123#,100"/></action></nop>'
    )
    session = await RtpSession.open(RtpParameters(telephone_event_pt=96))
    audio, digits = [], []
    async with sipp_call(tmp_path, session, media):
        loop = asyncio.get_running_loop()
        end = loop.time() + 8.0
        while len(digits) < 4 and loop.time() < end:
            ev = await asyncio.wait_for(session.recv(), end - loop.time())
            if isinstance(ev, AudioFrame):
                audio.append(ev.pcm)
            elif isinstance(ev, DtmfDigit):
                digits.append(ev)
    stats = session.receiver.stats
    await session.close("bye")
    assert [(d.digit, d.source) for d in digits] == [(d, "rfc4733") for d in "123#"]
    assert stats.unknown_pt == 20  # play_dtmf's PT 97 noops, ignored
    ref, _ = read_wav(AUDIO / "speech8k.wav")
    corr, _ = best_correlation(ref[:16000], np.concatenate(audio))
    assert corr > 0.99, corr


async def test_sipp_echoes_our_prompt_back_intact(tmp_path: Path) -> None:
    prompt, rate = read_wav(AUDIO / "prompt8k.wav")
    prompt = prompt[: 2 * rate]
    session = await RtpSession.open(RtpParameters(telephone_event_pt=96))
    audio = []
    async with sipp_call(tmp_path, session, '<pause milliseconds="100"/>', "-rtp_echo"):
        assert await session.play(prompt, rate)
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.4  # the echo's tail and the jitter buffer's delay
        while (left := end - loop.time()) > 0:
            try:
                ev = await asyncio.wait_for(session.recv(), left)
            except TimeoutError:
                break
            if isinstance(ev, AudioFrame):
                audio.append(ev.pcm)
    stats = session.receiver.stats
    await session.close("bye")
    assert stats.audio == 100 and stats.bad == 0
    assert session.receiver.jitter.stats.lost == 0
    corr, _ = best_correlation(prompt, np.concatenate(audio))
    assert corr > 0.99, corr
