"""RtpSession over real loopback UDP sockets."""

import asyncio
import itertools
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from media_helpers import best_correlation, dtmf_tone, read_wav

from asr_engine.audio.g711 import alaw_decode, ulaw_decode, ulaw_encode
from ivr.media.dtmf import rfc4733_packets
from ivr.media.events import AudioFrame, DtmfDigit, Hangup
from ivr.media.rtp import RtpPacket, parse_rtp
from ivr.media.rtp_session import RtpParameters, RtpSession, RtpSessionConfig

SPEECH = Path("/tmp/peers-work/audio/speech8k.wav")


class Peer(asyncio.DatagramProtocol):
    """The caller's side: a UDP socket that records what it receives, with arrival times."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, RtpPacket]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append((time.monotonic(), parse_rtp(data)))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, ("127.0.0.1", port))


async def peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, p = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return p


def speech(seconds: float) -> np.ndarray:
    if SPEECH.exists():
        pcm, rate = read_wav(SPEECH)
        assert rate == 8000
        return pcm[: int(seconds * 8000)]
    rng = np.random.default_rng(0)  # band-limited noise bursts stand in for speech
    return (rng.normal(0, 3000, int(seconds * 8000)) * (np.arange(int(seconds * 8000)) % 4000 < 3000)).astype(np.int16)


async def collect(session: RtpSession, seconds: float) -> tuple[np.ndarray, list[DtmfDigit], list]:
    audio, digits, other = [], [], []
    end = asyncio.get_running_loop().time() + seconds
    while (left := end - asyncio.get_running_loop().time()) > 0:
        try:
            ev = await asyncio.wait_for(session.recv(), left)
        except TimeoutError:
            break
        if isinstance(ev, AudioFrame):
            assert ev.sample_rate == 8000 and ev.pcm.dtype == np.int16
            audio.append(ev.pcm)
        elif isinstance(ev, DtmfDigit):
            digits.append(ev)
        else:
            other.append(ev)
            break
    return (np.concatenate(audio) if audio else np.zeros(0, np.int16)), digits, other


async def test_receives_speech_through_jitter_reorder_loss_and_garbage() -> None:
    caller = await peer()
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port), RtpSessionConfig())
    src = speech(2.4)
    n = len(src) // 160
    rng = np.random.default_rng(11)
    lost = set(rng.choice(np.arange(5, n - 5), size=3, replace=False).tolist())
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    # send times: 20 ms pacing plus 0-30 ms of jitter, which also reorders neighbours
    sends = sorted((t0 + i * 0.02 + rng.uniform(0, 0.03), i) for i in range(n) if i not in lost)
    dup = sends[10]

    async def sender() -> None:
        for k, (at, i) in enumerate(sorted([*sends, (dup[0] + 0.005, dup[1])])):
            await asyncio.sleep(max(0.0, at - loop.time()))
            pkt = RtpPacket(0, (65500 + i) & 0xFFFF, 1000 + i * 160, 0x1234, ulaw_encode(src[i * 160 : (i + 1) * 160]))
            caller.send(pkt.build(), session.local_port)
            if k % 20 == 5:
                caller.send(b"\x00\x01garbage" * (k % 7), session.local_port)
                caller.send(bytes([0x81, 201, 0, 7]) + b"\x00" * 28, session.local_port)  # muxed RTCP RR

    task = asyncio.create_task(sender())
    audio, digits, other = await collect(session, 0.05 + n * 0.02 + 0.35)
    await task
    corr, lag = best_correlation(src, audio)
    st = session.receiver.stats
    jb = session.receiver.jitter.stats
    await session.close("bye")
    assert digits == [] and other == []
    assert st.bad >= 5 and st.rtcp >= 5 and st.audio == len(sends) + 1
    assert jb.lost == len(lost) and jb.duplicate == 1 and jb.late == 0
    assert corr > 0.9, corr  # three 20 ms frames concealed out of 120
    assert 0 <= lag < 8000  # the leading silence before the first packet


async def test_in_order_audio_goes_on_as_it_arrives_with_its_arrival_time() -> None:
    caller = await peer()
    # A long jitter delay: in-order packets must not wait for it (only a missing one would).
    config = RtpSessionConfig(jitter_min_delay=0.5, jitter_max_delay=1.0)
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port), config)
    loop = asyncio.get_running_loop()
    src = speech(0.2)
    frames: list[tuple[float, float, AudioFrame]] = []
    for i in range(10):
        sent = loop.time()
        caller.send(
            RtpPacket(0, i, i * 160, 0x77, ulaw_encode(src[i * 160 : (i + 1) * 160])).build(), session.local_port
        )
        ev = await asyncio.wait_for(session.recv(), 5.0)
        assert isinstance(ev, AudioFrame)
        frames.append((sent, loop.time(), ev))
        await asyncio.sleep(0.02)
    await session.close("bye")
    for sent, got, ev in frames:
        assert ev.arrival is not None and sent <= ev.arrival <= got
        assert got - sent < 0.25  # far under the 0.5 s the buffer would wait for a missing packet
    assert np.array_equal(np.concatenate([ev.pcm for _, _, ev in frames]), ulaw_decode(ulaw_encode(src)))
    assert session.receiver.jitter.stats.lost == 0


async def test_play_is_paced_in_real_time_with_continuous_rtp() -> None:
    caller = await peer()
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port))
    prompt = speech(2.0)
    t = time.monotonic()
    assert await session.play(prompt, 8000) is True
    took = time.monotonic() - t
    await asyncio.sleep(0.3)
    assert await session.play(prompt[:8000], 8000) is True
    await asyncio.sleep(0.05)
    await session.close("bye")
    arrivals = np.array([a for a, _ in caller.packets])
    pkts = [p for _, p in caller.packets]
    assert len(pkts) == 100 + 50
    assert abs(took - 2.0) < 0.05, took
    gaps = np.diff(arrivals[:100])
    # a busy machine delays single packets (the next ones catch up): judge the bulk, not the worst
    assert abs(np.median(gaps) - 0.02) < 0.002, gaps
    assert np.mean(np.abs(gaps - 0.02) < 0.005) > 0.8, gaps
    # absolute deadlines: the 100th packet leaves 99 * 20 ms after the first, with no drift
    assert abs(arrivals[99] - arrivals[0] - 1.98) < 0.02
    assert [p.marker for p in pkts] == [True] + [False] * 99 + [True] + [False] * 49
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(pkts))
    assert all(b.timestamp - a.timestamp == 160 for a, b in itertools.pairwise(pkts[:100]))
    pause = (pkts[100].timestamp - pkts[99].timestamp) & 0xFFFFFFFF
    assert 160 + 0.25 * 8000 < pause < 160 + 0.45 * 8000  # the timestamp kept counting through the pause
    assert len({p.ssrc for p in pkts}) == 1 and {p.payload_type for p in pkts} == {0}
    sent = np.concatenate([ulaw_decode(p.payload) for p in pkts[:100]])
    assert best_correlation(prompt, sent)[0] > 0.99


async def test_stop_playback_cuts_within_one_packet_time() -> None:
    caller = await peer()
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port))
    play = asyncio.create_task(session.play(speech(3.0), 8000))
    await asyncio.sleep(0.5)
    stopped_at = time.monotonic()
    session.stop_playback()
    assert await play is False
    returned = time.monotonic() - stopped_at
    await asyncio.sleep(0.1)
    after = [a for a, _ in caller.packets if a > stopped_at]
    await session.close("bye")
    assert returned < 0.04, returned  # measured ~0.1 ms; the bound is the one-packet-time budget
    assert len(after) <= 1  # at most the packet already on its way
    assert 20 <= len(caller.packets) <= 27
    # a new prompt after a barge-in plays normally
    caller2 = await peer()
    s2 = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller2.port))
    s2.stop_playback()  # a stop with nothing playing does not poison the next prompt
    assert await s2.play(np.zeros(800, np.int16), 8000) is True
    await s2.close("bye")


async def test_play_resamples_and_follows_a_reinvite_to_pcma() -> None:
    caller = await peer()
    session = await RtpSession.open(RtpParameters(remote_host="127.0.0.1", remote_port=caller.port))
    t = np.arange(16000) / 16000
    tone16k = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    assert await session.play(tone16k[:3200], 16000)  # 200 ms at 16 kHz -> 10 packets at 8 kHz
    caller2 = await peer()
    session.update(RtpParameters(remote_host="127.0.0.1", remote_port=caller2.port, payload_type=8, codec="PCMA"))
    assert await session.play(tone16k[:3200], 16000)
    await asyncio.sleep(0.05)
    await session.close("bye")
    assert len(caller.packets) == 10 and len(caller2.packets) == 10
    assert {p.payload_type for _, p in caller2.packets} == {8}
    got = np.concatenate([alaw_decode(p.payload) for _, p in caller2.packets]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(got))
    assert abs(np.argmax(spectrum) * 8000 / len(got) - 500) < 10
    # the stream continues across the codec change
    assert (caller2.packets[0][1].sequence - caller.packets[-1][1].sequence) & 0xFFFF == 1


async def test_symmetric_rtp_latches_onto_the_real_source() -> None:
    advertised = await peer()  # what the SDP said (a NAT'd gateway's private address, say)
    actual = await peer()
    session = await RtpSession.open(
        RtpParameters(remote_host="127.0.0.1", remote_port=advertised.port), RtpSessionConfig(symmetric_rtp=True)
    )
    for i in range(3):
        actual.send(RtpPacket(0, i, i * 160, 5, b"\xff" * 160).build(), session.local_port)
    await asyncio.sleep(0.05)
    assert session.remote == ("127.0.0.1", actual.port)
    assert await session.play(np.zeros(480, np.int16), 8000)
    await asyncio.sleep(0.05)
    await session.close("bye")
    assert len(actual.packets) == 3 and advertised.packets == []


async def test_rfc4733_and_inband_dtmf_and_unknown_payload_types() -> None:
    caller = await peer()
    session = await RtpSession.open(
        RtpParameters(remote_host="127.0.0.1", remote_port=caller.port, telephone_event_pt=None)
    )
    # No telephone-event negotiated: tones in the audio are detected in-band.
    x = np.concatenate([np.zeros(800), dtmf_tone("4", 0.1), np.zeros(800), dtmf_tone("#", 0.1), np.zeros(1600)])
    for i in range(len(x) // 160):
        frame = ulaw_encode(np.clip(x[i * 160 : (i + 1) * 160], -32768, 32767).astype(np.int16))
        caller.send(RtpPacket(0, i, i * 160, 9, frame).build(), session.local_port)
        caller.send(RtpPacket(97, 900 + i, 0, 10, b"\x00" * 4).build(), session.local_port)
        await asyncio.sleep(0.02)
    _, digits, _ = await collect(session, 0.4)
    assert [(d.digit, d.source) for d in digits] == [("4", "inband"), ("#", "inband")]
    assert session.receiver.stats.unknown_pt == len(x) // 160
    # A re-INVITE negotiates telephone-event on PT 96: RFC 4733 digits, and in-band detection stops.
    session.update(session.params.model_copy(update={"telephone_event_pt": 96}))
    for p in rfc4733_packets("9", payload_type=96, ssrc=10, sequence=2000, timestamp=0):
        caller.send(p.build(), session.local_port)
    _, digits, _ = await collect(session, 0.2)
    assert [(d.digit, d.source) for d in digits] == [("9", "rfc4733")]
    await session.close("bye")


async def test_inactivity_timeout_hangs_up_and_close_releases_the_socket() -> None:
    caller = await peer()
    session = await RtpSession.open(
        RtpParameters(remote_host="127.0.0.1", remote_port=caller.port),
        RtpSessionConfig(inactivity_timeout=0.3),
    )
    for i in range(5):
        caller.send(RtpPacket(0, i, i * 160, 5, b"\xff" * 160).build(), session.local_port)
    t = time.monotonic()
    _, _, other = await collect(session, 2.0)
    assert other == [Hangup("rtp-timeout")]
    assert 0.25 < time.monotonic() - t < 0.6
    assert await session.recv() == Hangup("rtp-timeout")  # stays hung up
    assert await session.play(np.zeros(800, np.int16), 8000) is False
    port = session.local_port
    await session.close("bye")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))  # free again
    s.close()


async def test_close_delivers_hangup_and_port_range_binding() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    base = probe.getsockname()[1] & ~1
    probe.close()
    cfg = RtpSessionConfig(port_min=base, port_max=base + 41)
    sessions = [await RtpSession.open(config=cfg) for _ in range(3)]
    ports = [s.local_port for s in sessions]
    assert len(set(ports)) == 3 and all(p % 2 == 0 and base <= p < base + 41 for p in ports)
    assert [s.rtcp_port for s in sessions] == [p + 1 for p in ports]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(bytes([0x80, 200, 0, 6]) + b"\x00" * 24, ("127.0.0.1", ports[1] + 1))  # a sender report
    tx.sendto(b"not rtcp", ("127.0.0.1", ports[1] + 1))
    tx.close()
    await asyncio.sleep(0.05)
    assert (sessions[1].receiver.stats.rtcp, sessions[1].receiver.stats.bad) == (1, 1)
    waiter = asyncio.create_task(sessions[0].recv())
    await asyncio.sleep(0)
    await sessions[0].close("bye")
    assert await asyncio.wait_for(waiter, 1.0) == Hangup("bye")
    for s in sessions[1:]:
        await s.close("server-shutdown")
    lonely = await RtpSession.open()
    assert lonely.rtcp_port is None  # ephemeral port: RTCP only if muxed
    with pytest.raises(RuntimeError, match="no remote"):
        await lonely.play(np.zeros(160, np.int16), 8000)
    lonely.update(RtpParameters(remote_host="127.0.0.1", remote_port=9))
    with pytest.raises(ValueError, match="int16"):
        await lonely.play(np.zeros(160, np.float32), 8000)
    await lonely.close("bye")
