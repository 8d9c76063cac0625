from pathlib import Path

import numpy as np
import pytest
from media_helpers import dtmf_tone

from ivr.media.dtmf import (
    DIGITS,
    DtmfPayloadError,
    InbandDtmfDetector,
    Rfc4733Receiver,
    TelephoneEvent,
    rfc4733_packets,
)
from ivr.media.rtp import RtpPacket, parse_rtp
from ivr.media.rtp_session import RtpParameters, RtpReceiver, RtpSessionConfig

ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
CALLERS = Path("/work/shared/data/callers_dev")


def test_one_digit_per_event_despite_updates_and_three_end_packets() -> None:
    rx = Rfc4733Receiver()
    pkts = rfc4733_packets("5", payload_type=101, ssrc=1, sequence=10, timestamp=4000, duration_ms=160)
    assert sum(p.marker for p in pkts) == 1 and len(pkts) == 8 + 2
    assert [TelephoneEvent.parse(p.payload).end for p in pkts[-3:]] == [True] * 3
    got = [e for p in pkts if (e := rx.feed(p)) is not None]
    assert [(e.digit, e.volume, e.timestamp) for e in got] == [("5", 10, 4000)]


@pytest.mark.parametrize("pt", [96, 101, 127])
def test_every_digit_round_trips_at_any_payload_type(pt: int) -> None:
    rx = Rfc4733Receiver()
    out = []
    seq, ts = 65530, 0xFFFFF000  # wrapping sequence and timestamp
    for d in DIGITS:
        for p in rfc4733_packets(d, payload_type=pt, ssrc=3, sequence=seq, timestamp=ts):
            if (e := rx.feed(parse_rtp(p.build()))) is not None:
                out.append(e.digit)
            seq += 1
        ts = (ts + 1600) & 0xFFFFFFFF
    assert "".join(out) == DIGITS


def test_lost_start_packet_and_late_stragglers() -> None:
    rx = Rfc4733Receiver()
    a = rfc4733_packets("1", payload_type=101, ssrc=1, sequence=0, timestamp=800)
    b = rfc4733_packets("2", payload_type=101, ssrc=1, sequence=20, timestamp=2400)
    digits = [e.digit for p in a[1:] + b[:2] + [a[-1]] + b[2:] if (e := rx.feed(p)) is not None]
    assert digits == ["1", "2"]  # start of "1" lost; an end packet of "1" arriving during "2" is ignored
    # the sender restarts its timestamps far below: a new key press, not a straggler
    restart = rfc4733_packets("3", payload_type=101, ssrc=1, sequence=40, timestamp=0xFFFF0000)
    again = [e.digit for p in restart if (e := rx.feed(p)) is not None]
    assert again == ["3"]


def test_same_digit_twice_gives_two_digits_and_long_event_segments_one() -> None:
    rx = Rfc4733Receiver()
    pkts = rfc4733_packets("7", payload_type=101, ssrc=1, sequence=0, timestamp=0)
    pkts += rfc4733_packets("7", payload_type=101, ssrc=1, sequence=20, timestamp=2000)
    # a key held longer than 65535 units continues in a new segment right after the first
    seg1 = RtpPacket(101, 40, 10000, 1, TelephoneEvent(9, False, 10, 0xFFFF).encode(), marker=True)
    seg2 = RtpPacket(101, 41, (10000 + 0xFFFF) & 0xFFFFFFFF, 1, TelephoneEvent(9, True, 10, 800).encode())
    digits = [e.digit for p in [*pkts, seg1, seg2] if (e := rx.feed(p)) is not None]
    assert digits == ["7", "7", "9"]


def test_short_payload_is_a_typed_error() -> None:
    with pytest.raises(DtmfPayloadError):
        Rfc4733Receiver().feed(RtpPacket(101, 0, 0, 1, b"\x01\x02"))


def test_sipp_play_dtmf_noops_on_pt97_then_events_on_pt96_with_their_own_ssrc() -> None:
    rx = RtpReceiver(RtpParameters(telephone_event_pt=96), RtpSessionConfig())
    events = []
    t = 0.0
    for i in range(20):  # caller audio on PT 0 keeps flowing meanwhile
        rx.datagram(RtpPacket(0, i, i * 160, 0xCA110000, b"\xff" * 160).build(), t)
        rx.datagram(RtpPacket(97, 500 + i, 0, 0x5EED, b"\x00" * 4).build(), t)
        t += 0.02
    seq = 520
    for k, d in enumerate("123#"):
        for p in rfc4733_packets(d, payload_type=96, ssrc=0x5EED, sequence=seq, timestamp=8000 * k):
            events += rx.datagram(p.build(), t)[0]
            seq += 1
    assert [(e.digit, e.source) for e in events] == [(d, "rfc4733") for d in "123#"]
    assert rx.stats.unknown_pt == 20 and rx.stats.audio == 20
    assert rx.jitter.stats.ssrc_change == 0  # the event SSRC did not disturb the audio stream


def _keys(digits: str, tone: float, gap: float, **kw: float) -> np.ndarray:
    parts = [np.concatenate([dtmf_tone(d, tone, **kw), np.zeros(int(gap * 8000))]) for d in digits]
    return np.concatenate([np.zeros(800), *parts])


@pytest.mark.parametrize(
    ("deviation", "twist_db", "tone", "snr_db"),
    [
        (0.0, 0.0, 0.1, 30.0),
        (0.01, 2.0, 0.05, 20.0),
        (-0.01, -2.0, 0.05, 15.0),
        (0.0, 6.0, 0.04, 20.0),
        (0.015, 4.0, 0.07, 15.0),
    ],
)
def test_inband_tones_with_noise_are_detected(deviation: float, twist_db: float, tone: float, snr_db: float) -> None:
    rng = np.random.default_rng(7)
    x = _keys(DIGITS, tone, 0.05, deviation=deviation, twist_db=twist_db)
    noise_rms = np.sqrt(6000.0**2 / 2 / 10 ** (snr_db / 10))
    x = x + rng.normal(0, noise_rms, len(x))
    det = InbandDtmfDetector()
    got = []
    for i in range(0, len(x), 160):  # fed in 20 ms frames as the session does
        got += det.feed(np.clip(x[i : i + 160], -32768, 32767).astype(np.int16))
    assert "".join(got) == DIGITS


def test_inband_rejects_out_of_spec_tones() -> None:
    det = InbandDtmfDetector
    assert det().feed(_keys("123", 0.1, 0.1, deviation=0.04).astype(np.int16)) == []  # 4% off frequency
    assert det().feed(_keys("123", 0.1, 0.1, twist_db=12.0).astype(np.int16)) == []  # twist too large
    assert det().feed(_keys("123", 0.02, 0.1).astype(np.int16)) == []  # 20 ms: too short
    single = 6000 * np.sin(2 * np.pi * 697 * np.arange(8000) / 8000)
    assert det().feed(single.astype(np.int16)) == []  # one tone only


def test_held_key_gives_one_digit() -> None:
    assert InbandDtmfDetector().feed(_keys("8", 1.0, 0.1).astype(np.int16)) == ["8"]


def test_real_speech_produces_no_false_digits() -> None:
    import wave

    files = sorted(ALLISON.rglob("*.wav")) + sorted(CALLERS.glob("*.wav"))
    if len(files) < 100:
        pytest.skip("speech corpora not installed (asterisk-core-sounds-en-wav)")
    seconds = 0.0
    false = []
    for f in files:
        with wave.open(str(f)) as w:
            if w.getframerate() != 8000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
                continue
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        seconds += len(x) / 8000
        if digits := InbandDtmfDetector().feed(x):
            false.append((f.name, digits))
    assert seconds > 1000  # about 28 minutes of speech (and the odd sound effect)
    assert false == []


def test_receiver_state_is_bounded_under_an_ssrc_flood() -> None:
    rx = Rfc4733Receiver()
    for ssrc in range(1000):
        rx.feed(RtpPacket(101, 0, 0, ssrc, TelephoneEvent(1, False, 10, 160).encode()))
    assert len(rx._seen) <= Rfc4733Receiver.MAX_SSRCS and len(rx._state) <= Rfc4733Receiver.MAX_SSRCS
