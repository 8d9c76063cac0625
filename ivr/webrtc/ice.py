"""ICE host-candidate selection for the WebRTC endpoint, scoped to one peer connection at a time.

aioice gathers host candidates from every interface except 127.0.0.1 and offers no per-connection way
to choose them. Loopback deployments (and tests) need exactly 127.0.0.1; multi-homed hosts may want to
pin one interface. `pinned_host_addresses` makes aioice use a given list only for candidate gathering
started inside its `with` block (a ContextVar, inherited by the tasks aiortc spawns to gather), so other
peer connections in the process keep aioice's own behaviour. The hook is installed only the first
time a pinned list is used: an endpoint without `host_addresses` never touches aioice.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import aioice.ice

_PINNED: ContextVar[tuple[str, ...] | None] = ContextVar("voicenav_webrtc_host_addresses", default=None)
_aioice_default = aioice.ice.get_host_addresses

_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ ", re.IGNORECASE)


def _scoped_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    pinned = _PINNED.get()
    if pinned is None:
        return _aioice_default(use_ipv4, use_ipv6)
    return [
        a
        for a in pinned
        if (ipaddress.ip_address(a).version == 4 and use_ipv4) or (ipaddress.ip_address(a).version == 6 and use_ipv6)
    ]


def validate_host_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Checked, normalised literal IP addresses (ValueError otherwise)."""
    if not addresses:
        raise ValueError("host_addresses must name at least one address")
    return tuple(str(ipaddress.ip_address(a)) for a in addresses)


@contextmanager
def pinned_host_addresses(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within the block, aioice gathers host candidates on `addresses` only (None: aioice's default)."""
    if addresses is None:
        yield
        return
    if aioice.ice.get_host_addresses is not _scoped_host_addresses:
        aioice.ice.get_host_addresses = _scoped_host_addresses
    token = _PINNED.set(addresses)
    try:
        yield
    finally:
        _PINNED.reset(token)


def is_loopback_only(addresses: tuple[str, ...] | None) -> bool:
    return addresses is not None and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an mDNS "*.local" name or other hostname
        return False


def keep_loopback_candidates(sdp: str) -> tuple[str, int]:
    """The SDP without non-loopback ICE candidates (LAN addresses, mDNS names), and how many remain."""
    out: list[str] = []
    kept = 0
    for line in sdp.splitlines():
        m = _CANDIDATE.match(line)
        if m:
            if not _is_loopback_host(m.group(1)):
                continue
            kept += 1
        out.append(line)
    return "\r\n".join(out) + "\r\n", kept


def count_candidates(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if _CANDIDATE.match(line))
