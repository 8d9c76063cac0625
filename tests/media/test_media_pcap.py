"""Real captures: sipp's shipped RFC 2833 pcaps, its G.711 A-law pcap and the peers kit's speech+DTMF pcap."""

from pathlib import Path

import numpy as np
import pytest
from media_helpers import best_correlation, pcap_udp_payloads, read_wav

from ivr.media.events import AudioFrame, DtmfDigit
from ivr.media.rtp_session import RtpParameters, RtpReceiver, RtpSessionConfig

SIPP = Path("/usr/share/sip-tester")
PEERS_AUDIO = Path("/tmp/peers-work/audio")


def replay(path: Path, params: RtpParameters, tail: float = 0.5) -> tuple[list[str], np.ndarray, RtpReceiver]:
    """Feed a capture to a receiver on the capture's clock, ticking the playout every 20 ms."""
    rx = RtpReceiver(params, RtpSessionConfig())
    packets = pcap_udp_payloads(path)
    t0 = packets[0][0]
    digits: list[str] = []
    audio: list[np.ndarray] = []

    def collect(events: list) -> None:
        for e in events:
            if isinstance(e, DtmfDigit):
                digits.append(e.digit)
            elif isinstance(e, AudioFrame):
                audio.append(e.pcm)

    tick = 0.0
    end = packets[-1][0] - t0 + tail
    i = 0
    while tick <= end:
        while i < len(packets) and packets[i][0] - t0 <= tick:
            collect(rx.datagram(packets[i][1], packets[i][0] - t0)[0])
            i += 1
        collect(rx.tick(tick))
        tick += 0.02
    return digits, np.concatenate(audio) if audio else np.zeros(0, np.int16), rx


@pytest.mark.parametrize(
    ("name", "digit"),
    [(f"dtmf_2833_{d}.pcap", d) for d in "0123456789"] + [("dtmf_2833_star.pcap", "*"), ("dtmf_2833_pound.pcap", "#")],
)
def test_sipp_rfc2833_captures_give_exactly_one_digit(name: str, digit: str) -> None:
    path = SIPP / name
    if not path.exists():
        pytest.skip("sip-tester not installed")
    digits, _, rx = replay(path, RtpParameters(telephone_event_pt=101))
    assert digits == [digit]
    assert rx.stats.dtmf == 10 and rx.stats.bad == 0


def test_speech_with_dtmf_capture_decodes_digits_and_audio() -> None:
    pcap, wav = PEERS_AUDIO / "speech_pcmu_dtmf.pcap", PEERS_AUDIO / "speech8k.wav"
    if not pcap.exists():
        pytest.skip("peers kit audio not generated")
    digits, audio, rx = replay(pcap, RtpParameters(payload_type=0, codec="PCMU", telephone_event_pt=101))
    assert digits == ["1", "2", "#"]
    ref, rate = read_wav(wav)
    assert rate == 8000
    corr, _ = best_correlation(ref, audio)
    assert corr > 0.99
    assert rx.jitter.stats.lost == 0 and rx.jitter.stats.late == 0


def test_alaw_capture_with_30ms_packets_received_when_pcmu_was_expected() -> None:
    path = SIPP / "g711a.pcap"
    if not path.exists():
        pytest.skip("sip-tester not installed")
    # Negotiated PCMU/PT 0, but the capture is PCMA on static PT 8 with 30 ms packets.
    _, audio, rx = replay(path, RtpParameters(payload_type=0, codec="PCMU", ptime_ms=20))
    assert rx.stats.audio == 236 and rx.stats.unknown_pt == 0
    assert rx.jitter.stats.lost == 0 and rx.jitter.stats.played == 236
    assert np.abs(audio.astype(np.int32)).max() > 1000
