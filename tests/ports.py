"""Free loopback ports for test servers and callers, never the ones the real peers use."""

from __future__ import annotations

import socket

# sipp 5060/16000, baresip 5062/4444/30000-30100, the peers' stand-in servers 5070/8080/40000.
RESERVED = frozenset({5060, 5062, 5070, 8080, 4444, 16000, 40000, *range(30000, 30101)})
UDP, TCP = socket.SOCK_DGRAM, socket.SOCK_STREAM


def free_ports(n: int = 1, kinds: tuple[int, ...] = (UDP,)) -> int:
    """First of `n` consecutive ports free right now for every socket kind in `kinds`."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kinds[0]) as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        ports = range(base, base + n)
        if base + n > 65535 or any(p in RESERVED for p in ports):
            continue
        socks = []
        try:
            for p in ports:
                for kind in kinds:
                    t = socket.socket(socket.AF_INET, kind)
                    socks.append(t)
                    t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError(f"no {n} free consecutive ports")
