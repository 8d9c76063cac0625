"""The token bucket and the SIP source allowlist on their own: refill, waits, bounded memory, CIDRs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ivr.calls.ratelimit import BucketParams, KeyedLimiter, retry_after
from ivr.sip.access import SipAccess, SipAccessParams
from ivr.webrtc.offer_guard import OfferTokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_at_its_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = KeyedLimiter(BucketParams(rate_per_s=0.5, burst=2), clock=clock)
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)  # one token comes back every 2 s
    assert limiter.take("b") == 0.0  # keys are independent
    clock.now += 1.0
    assert limiter.wait_s("a") == pytest.approx(1.0) and limiter.take("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert limiter.take("a") == 0.0
    clock.now += 100.0
    takes = [limiter.take("a") for _ in range(3)]
    assert takes[:2] == [0.0, 0.0] and takes[2] > 0  # never more than the burst
    assert retry_after(0.2) == "1" and retry_after(2.01) == "3"


def test_bucket_memory_is_bounded_and_forgets_the_oldest_key() -> None:
    clock = Clock()
    limiter = KeyedLimiter(BucketParams(rate_per_s=0.001, burst=1), max_keys=3, clock=clock)
    for key in ("a", "b", "c", "d"):
        assert limiter.take(key) == 0.0
    assert limiter.take("d") > 0  # remembered
    assert limiter.take("a") == 0.0  # forgotten: starts full again


def test_sip_source_allowlist() -> None:
    default = SipAccess(SipAccessParams())
    assert default.source_allowed("127.0.0.1") and default.source_allowed("127.0.0.2")
    assert default.source_allowed("::1") and default.source_allowed("::ffff:127.0.0.1")
    assert not default.source_allowed("192.0.2.10") and not default.source_allowed("not-an-ip")
    sbc = SipAccess(SipAccessParams(allow_sources=("203.0.113.0/28", "2001:db8::/64")))
    assert sbc.source_allowed("203.0.113.14") and not sbc.source_allowed("203.0.113.16")
    assert sbc.source_allowed("2001:db8::5") and not sbc.source_allowed("127.0.0.1")
    assert SipAccess(SipAccessParams(allow_sources=("any",))).source_allowed("198.51.100.7")
    with pytest.raises(ValidationError):
        SipAccessParams(allow_sources=("any", "10.0.0.0/8"))
    with pytest.raises(ValidationError):
        SipAccessParams(allow_sources=("10.0.0.300/8",))


def test_offer_tokens_expire_and_are_single_use() -> None:
    clock = Clock()
    tokens = OfferTokens(b"k" * 32, ttl_s=60, clock=clock)
    first, second = tokens.issue(), tokens.issue()
    assert first != second
    assert tokens.redeem(first) and not tokens.redeem(first)
    assert not OfferTokens(b"other key" * 4, ttl_s=60, clock=clock).redeem(second)  # another secret
    clock.now += 61
    assert not tokens.redeem(second)
