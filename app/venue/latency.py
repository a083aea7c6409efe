"""The latency probe: how fast a client turns market data into orders, measured by the venue.

For each order a connection sends (insert, buy, sell, amend, mass_quote, cancel),
the venue records the time from the last market-data notification it had written
to that connection (ticker, lwt, book, price_index, recent_trades), stamped as the
bytes are handed to the socket, to the arrival of the order, stamped at the socket read
that brings it in (before aiohttp parses it, and before the venue handles anything else
that came with it). That is the tick-to-order time of the client, plus loopback
transport, which docs/architecture.md#d1-the-hot-path-stays-in-one-process asks the venue to measure end to end. Orders sent
before any market data was written to the connection are not recorded.

Read it with ``Venue.latency_stats()``, the JSON-RPC method ``venue/latency``
(params ``{"reset": false}``, no login needed) or ``GET /venue/latency`` on the
venue's HTTP port. Figures are in milliseconds.
"""
from __future__ import annotations

import math
from collections import defaultdict


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending ``ordered`` by the nearest-rank method."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: list[float]) -> dict:
    """count, p50, p90, p99 and max (ms) of samples in seconds."""
    if not samples:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)
    return {
        "count": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1e3,
        "p90_ms": percentile(ordered, 0.90) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


class LatencyProbe:
    """Tick-to-order samples, overall and per method. Keeps at most ``max_samples`` per method."""

    def __init__(self, max_samples: int = 1_000_000) -> None:
        self.max_samples = max_samples
        self.samples: dict[str, list[float]] = defaultdict(list)

    def record(self, method: str, seconds: float) -> None:
        bucket = self.samples[method]
        if len(bucket) < self.max_samples:
            bucket.append(seconds)

    def reset(self) -> None:
        self.samples.clear()

    def stats(self) -> dict:
        """{"all": summary, "by_method": {method: summary}}; each summary as in ``summarise``."""
        everything = [s for bucket in self.samples.values() for s in bucket]
        return {
            "all": summarise(everything),
            "by_method": {method: summarise(bucket) for method, bucket in sorted(self.samples.items())},
        }
