"""Latency models of the backtest: how long market data takes to reach the strategy, and orders the venue.

Contract
- ``feed()``: seconds from an event at the venue (exchange time) to the strategy seeing it;
  the same delay carries our order reports (``session.orders`` is a feed).
- ``order()``: seconds of a request's round trip (order sent → ack received, the D9 stage
  ``order_sent_to_ack_received``, docs/architecture.md#d9-latency-stamps); the request
  reaches the venue after half of it, the answer takes the other half.
- ``ConstantLatency(feed_s, order_s)``; ``RecordedLatency(feed_samples, order_samples, seed)``
  draws each delay from recorded samples (``latency_samples`` / the ``stage_latency`` view:
  ``exchange_to_received`` for the feed, ``order_sent_to_ack_received`` for orders) with its
  own seeded generator, so a replay is deterministic.
"""
from __future__ import annotations

import random
from typing import Sequence


class ConstantLatency:
    def __init__(self, feed_s: float = 0.005, order_s: float = 0.010) -> None:
        if feed_s < 0 or order_s < 0:
            raise ValueError("latencies must be >= 0")
        self.feed_s, self.order_s = feed_s, order_s
        self.name = f"constant feed {feed_s * 1e3:g} ms, order {order_s * 1e3:g} ms"

    def feed(self) -> float:
        return self.feed_s

    def order(self) -> float:
        return self.order_s


class RecordedLatency:
    def __init__(self, feed_samples: Sequence[float], order_samples: Sequence[float], seed: int = 0) -> None:
        if not feed_samples or not order_samples:
            raise ValueError("recorded latency needs samples of both stages (exchange_to_received, "
                             "order_sent_to_ack_received)")
        self._feed, self._order = list(feed_samples), list(order_samples)
        self._random = random.Random(seed)
        self.name = f"recorded ({len(self._feed)} feed, {len(self._order)} order samples)"

    def feed(self) -> float:
        return self._random.choice(self._feed)

    def order(self) -> float:
        return self._random.choice(self._order)


def parse_latency(text: str):
    """``constant`` (defaults), ``constant:FEED_MS,ORDER_MS``, or ``recorded`` (samples loaded by the caller)."""
    kind, _, rest = text.partition(":")
    if kind == "constant":
        if not rest:
            return ConstantLatency()
        try:
            feed_ms, order_ms = (float(x) for x in rest.split(","))
        except ValueError:
            raise ValueError(f"--latency constant:FEED_MS,ORDER_MS, got {text!r}") from None
        return ConstantLatency(feed_ms / 1e3, order_ms / 1e3)
    if kind == "recorded":
        return "recorded"
    raise ValueError(f"--latency must be constant, constant:FEED_MS,ORDER_MS or recorded; got {text!r}")
