"""The codec registry: one entry per codec, read by SDP negotiation and by the RTP session alike."""

from __future__ import annotations

import audioop

import numpy as np
import pytest

from ivr.media import codecs
from ivr.media.rtp_session import SAMPLE_RATE
from ivr.sip.sdp import build_offer, negotiate, parse_sdp


@pytest.mark.parametrize(
    "name, pt, reference_encode, reference_decode",
    [
        ("PCMU", 0, audioop.lin2ulaw, audioop.ulaw2lin),
        ("PCMA", 8, audioop.lin2alaw, audioop.alaw2lin),
    ],
)
def test_each_codec_is_its_rfc3551_static_type_and_g711(name, pt, reference_encode, reference_decode) -> None:
    c = codecs.codec(name)
    assert (c.payload_type, c.clock_rate) == (pt, 8000)
    assert codecs.by_static_payload_type(pt) is c
    assert codecs.by_name(name.lower(), 8000) is c and codecs.by_name(name) is c
    assert codecs.by_name(name, 16000) is None  # the same name at another rate is another codec
    pcm = np.random.default_rng(3).integers(-32768, 32768, 800, dtype=np.int16)
    assert c.encode(pcm) == reference_encode(pcm.tobytes(), 2)
    every_byte = bytes(range(256))
    assert c.decode(every_byte).tobytes() == reference_decode(every_byte, 2)


def test_unknown_codecs_and_types_are_none() -> None:
    assert codecs.by_name("G729") is None and codecs.by_name("opus", 48000) is None
    assert codecs.by_static_payload_type(18) is None and codecs.by_static_payload_type(96) is None


def test_the_rtp_session_rate_is_every_codecs_rate() -> None:
    assert {c.clock_rate for c in codecs.CODECS} == {SAMPLE_RATE}


def test_our_offer_lists_the_registry_and_negotiates_back() -> None:
    body = build_offer(local_ip="192.0.2.1", local_port=4000, session_id=1, session_version=1)
    offer = parse_sdp(body)
    audio = offer.media[0]
    assert [int(f) for f in audio.formats[: len(codecs.CODECS)]] == [c.payload_type for c in codecs.CODECS]
    assert {pt: audio.rtpmap[pt] for pt in (0, 8)} == {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
    assert negotiate(offer).media.codec == codecs.CODECS[0].name
