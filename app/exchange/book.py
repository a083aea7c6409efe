"""A local L2 book rebuilt from a ``book.<instrument>.<grouping>.<levels>.<delay>`` feed.

Thalex sends a snapshot (``snapshot: true``) and then deltas: each change
``[price, amount, outright_amount]`` replaces the level at that price, and an
amount of 0 removes it (docs/thalex-protocol.md §3.3). The feed has no sequence numbers, so
a lost message cannot be seen directly; it shows up as a book that no longer
adds up. Every notification carries the venue's ``total_bid_amount`` and
``total_ask_amount``: when the book holds all levels (``levels == all``) the local
sums must equal them, and a crossed book is never right either. A mismatch is a
gap (BookGap): the owner resubscribes and starts over from the next snapshot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

#: Amounts are decimals like 0.001 BTC; sums of floats drift in the last bits.
_AMOUNT_TOLERANCE = 1e-9


class BookGap(Exception):
    """The local book no longer matches the venue's; resubscribe for a new snapshot."""


def _levels(changes: Any, side: str) -> Iterable[tuple[float, float]]:
    if not isinstance(changes, list):
        raise TypeError(f"{side}_changes must be a list, got {type(changes).__name__}")
    for change in changes:
        if not isinstance(change, list) or len(change) < 2:
            raise TypeError(f"a {side} change must be [price, amount, ...], got {change!r}")
        price, amount = change[0], change[1]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (price, amount)):
            raise TypeError(f"a {side} change must hold numbers, got {change!r}")
        if not math.isfinite(price) or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"a {side} change is out of range: {change!r}")
        yield float(price), float(amount)


@dataclass
class LocalBook:
    instrument: str
    #: True when the feed carries every level (``levels == all``), so totals can be checked.
    full_depth: bool = True
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    #: The venue's time of the last update (unix seconds), None before the first snapshot.
    time: Optional[float] = None
    synced: bool = False

    def reset(self) -> None:
        """Forget everything: wait for the next snapshot (after a drop or a gap)."""
        self.bids.clear()
        self.asks.clear()
        self.time = None
        self.synced = False

    def apply(self, payload: dict, snapshot: bool) -> None:
        """Apply one notification. Raises BookGap when the result cannot be right,
        TypeError/ValueError when the payload itself is malformed (the book is then reset)."""
        if not isinstance(payload, dict):
            raise TypeError(f"book notification must be an object, got {type(payload).__name__}")
        if not snapshot and not self.synced:
            raise BookGap(f"{self.instrument}: a delta arrived before any snapshot")
        bid_changes = list(_levels(payload.get("bid_changes", []), "bid"))
        ask_changes = list(_levels(payload.get("ask_changes", []), "ask"))
        if snapshot:
            self.reset()
        for book, changes in ((self.bids, bid_changes), (self.asks, ask_changes)):
            for price, amount in changes:
                if amount == 0:
                    book.pop(price, None)
                else:
                    book[price] = amount
        time = payload.get("time")
        if isinstance(time, (int, float)) and not isinstance(time, bool):
            self.time = float(time)
        self.synced = True
        self._check(payload)

    def _check(self, payload: dict) -> None:
        best_bid, best_ask = self.best_bid(), self.best_ask()
        if best_bid is not None and best_ask is not None and best_bid[0] >= best_ask[0]:
            self.synced = False
            raise BookGap(f"{self.instrument}: crossed book, bid {best_bid[0]} >= ask {best_ask[0]}")
        if not self.full_depth:
            return
        for side, book, key in (("bid", self.bids, "total_bid_amount"), ("ask", self.asks, "total_ask_amount")):
            total = payload.get(key)
            if isinstance(total, (int, float)) and not isinstance(total, bool):
                local = sum(book.values())
                if abs(local - total) > _AMOUNT_TOLERANCE * max(1.0, abs(total)):
                    self.synced = False
                    raise BookGap(f"{self.instrument}: local {side} total {local} != venue's {total}")

    def best_bid(self) -> Optional[tuple[float, float]]:
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> Optional[tuple[float, float]]:
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def levels(self, depth: Optional[int] = None) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids best first, asks best first), ``depth`` levels each (all when None)."""
        bids = sorted(self.bids.items(), key=lambda level: -level[0])
        asks = sorted(self.asks.items())
        return bids[:depth], asks[:depth]
