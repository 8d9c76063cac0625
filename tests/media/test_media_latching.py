"""Media only from the negotiated peer: strangers sending to an RTP port are counted and ignored, over
real loopback UDP sockets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from test_media_session import collect, peer

from asr_engine.audio.g711 import ulaw_encode
from ivr.media.dtmf import rfc4733_packets
from ivr.media.rtp import RtpPacket
from ivr.media.rtp_session import RTP_REJECTED, RtpParameters, RtpSession, RtpSessionConfig, _same_address


def _rejected() -> float:
    return RTP_REJECTED.labels("foreign-source")._value.get()


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


async def test_stranger_first_and_mid_call_dtmf_change_nothing() -> None:
    caller, stranger = await peer(), await peer()
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port))
    before = _rejected()
    # The stranger's packet arrives before the caller's first RTP.
    stranger.send(RtpPacket(0, 1, 0, 0xBAD, b"\x00" * 160).build(), session.local_port)
    audio = _tone(0.4)
    for i in range(len(audio) // 160):
        caller.send(RtpPacket(0, i, i * 160, 7, audio[i * 160 : (i + 1) * 160]).build(), session.local_port)
        if i == 10:  # mid-call, the stranger keys a "3" over RFC 4733
            for p in rfc4733_packets("3", payload_type=101, ssrc=0xBAD, sequence=50, timestamp=0):
                stranger.send(p.build(), session.local_port)
        await asyncio.sleep(0.02)
    heard, digits, other = await collect(session, 0.3)
    assert digits == [] and other == []
    assert len(heard) >= 0.3 * 8000  # the caller's audio came through
    assert session.remote == ("127.0.0.1", caller.port)
    assert await session.play(np.full(800, 1000, np.int16), 8000)
    await asyncio.sleep(0.05)
    await session.close("bye")
    assert len(caller.packets) == 5 and stranger.packets == []
    stranger_datagrams = 1 + len(rfc4733_packets("3", payload_type=101, ssrc=0xBAD, sequence=50, timestamp=0))
    assert session.foreign_packets == stranger_datagrams
    assert _rejected() - before == stranger_datagrams
    assert session.receiver.stats.dtmf == 0


async def test_symmetric_rtp_latches_once_and_never_switches_to_a_stranger() -> None:
    advertised, natted, stranger = await peer(), await peer(), await peer()
    session = await RtpSession.open(
        RtpParameters(remote_host="127.0.0.1", remote_port=advertised.port), RtpSessionConfig(symmetric_rtp=True)
    )
    # Garbage and an unnegotiated payload type are no reason to latch.
    stranger.send(b"hello", session.local_port)
    stranger.send(RtpPacket(97, 1, 0, 0xBAD, b"\x00" * 4).build(), session.local_port)
    await asyncio.sleep(0.02)
    assert session.remote == ("127.0.0.1", advertised.port)
    for i in range(3):
        natted.send(RtpPacket(0, i, i * 160, 5, b"\xff" * 160).build(), session.local_port)
    await asyncio.sleep(0.05)
    assert session.remote == ("127.0.0.1", natted.port)
    # Mid-call, a stranger sends valid audio and a digit; the latched source with another SSRC is foreign too.
    for i in range(3):
        stranger.send(RtpPacket(0, i, i * 160, 5, b"\xff" * 160).build(), session.local_port)
    natted.send(RtpPacket(0, 9, 9 * 160, 6, b"\xff" * 160).build(), session.local_port)
    for p in rfc4733_packets("3", payload_type=101, ssrc=0xBAD, sequence=50, timestamp=0):
        stranger.send(p.build(), session.local_port)
    _, digits, _ = await collect(session, 0.2)
    assert digits == []
    assert session.remote == ("127.0.0.1", natted.port)
    assert await session.play(np.zeros(480, np.int16), 8000)
    await asyncio.sleep(0.05)
    assert len(natted.packets) == 3 and stranger.packets == [] and advertised.packets == []
    # The negotiated address is never a stranger: media from it takes the latch back.
    advertised.send(RtpPacket(0, 1, 160, 11, b"\xff" * 160).build(), session.local_port)
    await asyncio.sleep(0.05)
    assert session.remote == ("127.0.0.1", advertised.port)
    await session.close("bye")
    assert session.receiver.stats.audio == 3 + 1


async def test_without_a_negotiated_address_nothing_is_taken_unless_latching_is_on() -> None:
    sender = await peer()
    strict = await RtpSession.open(RtpParameters())
    sender.send(RtpPacket(0, 1, 0, 5, b"\xff" * 160).build(), strict.local_port)
    await asyncio.sleep(0.05)
    assert strict.remote is None and strict.receiver.stats.audio == 0 and strict.foreign_packets == 1
    await strict.close("bye")


@pytest.mark.parametrize(
    ("source", "negotiated", "same"),
    [
        (("127.0.0.1", 4000), ("127.0.0.1", 4000), True),
        (("127.0.0.1", 4001), ("127.0.0.1", 4000), False),
        (("::ffff:10.0.0.5", 4000), ("10.0.0.5", 4000), True),
        (("2001:db8::1", 4000), ("2001:DB8:0::1", 4000), True),
        (("10.0.0.6", 4000), ("10.0.0.5", 4000), False),
        (("10.0.0.5", 4000), ("gw.example.net", 4000), False),
    ],
)
def test_source_addresses_compare_as_addresses(source, negotiated, same: bool) -> None:
    assert _same_address(source, negotiated) is same
