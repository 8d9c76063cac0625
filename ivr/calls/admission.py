"""Whether a new call may start: one count of calls in progress over every transport, one capacity
limit, one draining flag and one Retry-After for every 503 the service sends.

The SIP server admits on INVITE and the WebRTC endpoint on an offer; both release when the call is
over. /readyz and the routes that wait for the model ask the same object, so a caller is never told
"come back later" on one front end and let in on the other.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

from prometheus_client import Gauge

Transport = Literal["sip", "webrtc"]
TRANSPORTS: tuple[Transport, ...] = ("sip", "webrtc")
Refusal = Literal["loading", "draining", "capacity"]

ACTIVE_CALLS = Gauge("voicenav_active_calls", "Calls in progress (admitted, not yet over)", ["transport"])
DRAINING = Gauge("voicenav_draining", "1 while the instance drains calls before shutting down")
for _t in TRANSPORTS:
    ACTIVE_CALLS.labels(_t)  # both series exist at 0 before the first call, for the autoscaler


class CallGate(Protocol):
    """What a front end needs to admit calls."""

    @property
    def retry_after_s(self) -> int: ...

    @property
    def draining(self) -> bool: ...

    def admit(self, transport: Transport) -> Refusal | None:
        """Count a new call and return None, or return why it is refused (nothing counted)."""
        ...

    def release(self, transport: Transport) -> None: ...

    def start_draining(self) -> None: ...


class Admission:
    """The `CallGate` of one instance. `loading=True` refuses calls until `open()`."""

    def __init__(self, max_calls: int, retry_after_s: int, *, loading: bool = False) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be >= 1")
        self.max_calls = max_calls
        self._retry_after_s = retry_after_s
        self._loading = loading
        self._draining = False
        self._active: dict[Transport, int] = dict.fromkeys(TRANSPORTS, 0)
        self._idle = asyncio.Event()
        self._idle.set()
        DRAINING.set(0)

    @property
    def retry_after_s(self) -> int:
        return self._retry_after_s

    @property
    def retry_after(self) -> dict[str, str]:
        """The header every 503 carries."""
        return {"Retry-After": str(self._retry_after_s)}

    @property
    def draining(self) -> bool:
        return self._draining

    def active(self, transport: Transport | None = None) -> int:
        return sum(self._active.values()) if transport is None else self._active[transport]

    def refusal(self) -> Refusal | None:
        """Why a call arriving now would be refused, or None."""
        if self._draining:
            return "draining"
        if self._loading:
            return "loading"
        if self.active() >= self.max_calls:
            return "capacity"
        return None

    def admit(self, transport: Transport) -> Refusal | None:
        refused = self.refusal()
        if refused is None:
            self._active[transport] += 1
            self._idle.clear()
            ACTIVE_CALLS.labels(transport).inc()
        return refused

    def release(self, transport: Transport) -> None:
        if self._active[transport] == 0:
            raise RuntimeError(f"release of a {transport} call that was never admitted")
        self._active[transport] -= 1
        ACTIVE_CALLS.labels(transport).dec()
        if self.active() == 0:
            self._idle.set()

    def open(self) -> None:
        """Loaded: take calls from now on (unless draining)."""
        self._loading = False

    def start_draining(self) -> None:
        """Refuse every new call from now on; calls in progress go on."""
        self._draining = True
        DRAINING.set(1)

    async def wait_idle(self) -> None:
        """Return once no call is in progress."""
        await self._idle.wait()
