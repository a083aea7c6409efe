"""The token bucket of app/exchange/rate_limit.py: the venue's count, and the gateway's back-off."""
from __future__ import annotations

import pytest

from app.exchange.rate_limit import TokenBucket


def test_throttle_pauses_grow_while_the_venue_keeps_throttling():
    bucket = TokenBucket(rate=40.0, now=0.0, backoff_s=0.1, backoff_max_s=2.0)
    assert bucket.take(0.0)
    assert bucket.pause(0.0) == 0.1
    assert bucket.pause(0.05) == pytest.approx(0.05)  # a reply of the same burst: the same pause
    assert not bucket.take(0.09) and bucket.paused(0.09)
    bucket.recovered(0.15)  # accepted right after the pause ...
    assert bucket.pause(0.2) == 0.2  # ... but throttled again: twice as long
    assert [bucket.pause(t) for t in (1.0, 2.0, 3.0, 5.0)] == [0.4, 0.8, 1.6, 2.0]  # capped
    bucket.recovered(5.0 + 2.0 + 2.0)  # nothing throttled for a longest pause's time
    assert bucket.pause(10.0) == 0.1
    assert not bucket.take(10.05) and bucket.take(10.2)  # refilled after the pause
