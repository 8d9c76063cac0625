"""Token buckets per client (a source address or a token's identity), for the HTTP routes and SIP."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class BucketParams(BaseModel):
    """`rate_per_s` tokens come back each second, up to `burst`; one request takes one token."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rate_per_s: float = Field(gt=0, description="sustained requests per second")
    burst: int = Field(ge=1, description="requests allowed at once before the rate applies")


class KeyedLimiter:
    """One token bucket per key. Only the `max_keys` most recently seen keys are remembered, so a
    flood of new source addresses cannot grow memory without bound; a forgotten key starts full."""

    def __init__(
        self, params: BucketParams, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.params = params
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, key: str) -> float:
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.params.burst), now))
        tokens = min(float(self.params.burst), tokens + (now - at) * self.params.rate_per_s)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return tokens

    def take(self, key: str) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be (nothing taken)."""
        tokens = self._level(key)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, self._buckets[key][1])
            return 0.0
        return (1.0 - tokens) / self.params.rate_per_s

    def wait_s(self, key: str) -> float:
        """Seconds until `key` has a token again (0.0: it has one now); takes nothing."""
        tokens = self._level(key)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.params.rate_per_s


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait."""
    return str(max(1, math.ceil(wait_s)))
