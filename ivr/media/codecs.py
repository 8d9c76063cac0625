"""The audio codecs we speak over RTP: one entry per codec with its RFC 3551 static payload type,
clock rate and sample transforms. SDP negotiation and the RTP session both read it, so what we
offer and what we can decode never drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from asr_engine.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

CodecName = Literal["PCMU", "PCMA"]


@dataclass(frozen=True, slots=True)
class Codec:
    name: CodecName  # the SDP encoding name (rtpmap), upper case
    payload_type: int  # RFC 3551 static type: usable without an rtpmap
    clock_rate: int
    encode: Callable[[np.ndarray], bytes]  # int16 samples -> payload
    decode: Callable[[bytes], np.ndarray]  # payload -> int16 samples


PCMU = Codec("PCMU", 0, 8000, ulaw_encode, ulaw_decode)
PCMA = Codec("PCMA", 8, 8000, alaw_encode, alaw_decode)
CODECS: tuple[Codec, ...] = (PCMU, PCMA)  # our order of preference in an offer

_BY_NAME: dict[str, Codec] = {c.name: c for c in CODECS}
_BY_STATIC_PT = {c.payload_type: c for c in CODECS}


def by_name(name: str, clock_rate: int | None = None) -> Codec | None:
    """The codec an rtpmap names (case-insensitive), if we have it at that clock rate."""
    found = _BY_NAME.get(name.upper())
    if found is None or (clock_rate is not None and clock_rate != found.clock_rate):
        return None
    return found


def by_static_payload_type(payload_type: int) -> Codec | None:
    """The codec a static payload type stands for when no rtpmap says otherwise."""
    return _BY_STATIC_PT.get(payload_type)


def codec(name: CodecName) -> Codec:
    return _BY_NAME[name]
