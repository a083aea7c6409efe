"""One instrument's market data: index, mark price, funding, last trade and 24 h statistics.

The mark and funding rule (docs/thalex-protocol.md §5.3), applied once per market step by
``Engine.advance`` (engine.py):
- the premium is that of the book's mid price over the index (``fair_price``); the mark is
  index + an exponential moving average of that premium;
- the funding rate is the averaged premium over the index, less a dampener on either side
  of zero, on a 24 h basis (positive = longs pay);
- the funding mark accumulates what one long contract has paid since the venue started;
  positions settle funding against it (accounts.py).

The 24 h statistics (volume, value, low, high, change, realised and average funding) are
kept incrementally, so a ticker (reports.py) reads them without scanning a day of trades.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Optional

from app.venue.book import OrderBook
from app.venue.instruments import Instrument

#: Recent public trades kept per instrument for snapshots (book and recent_trades channels).
RECENT_TRADES = 100
DAY = 86_400.0


def fair_price(ins: Instrument, book: OrderBook, index: float) -> float:
    """The price the premium is measured from: the book's mid price; with one side empty,
    the index constrained by the side that is there (no premium with an empty book)."""
    bid, ask = book.best_bid(), book.best_ask()
    if bid is not None and ask is not None:
        return (ins.price(bid) + ins.price(ask)) / 2
    if bid is not None:
        return max(index, ins.price(bid))
    if ask is not None:
        return min(index, ins.price(ask))
    return index


class MarketState:
    """Per-instrument market data: index, mark, funding, last trade and 24 h statistics."""

    __slots__ = ("index", "mark", "premium_ema", "funding_mark", "funding_rate", "mark_time", "last_ticks",
                 "trades_24h", "low_24h", "high_24h", "volume_24h", "value_24h", "funding_samples",
                 "open_interest_units", "recent_trades", "book_time")

    def __init__(self, index: float, now: float) -> None:
        self.index = index
        self.mark = index
        self.premium_ema = 0.0
        #: Cumulative funding paid by one long contract since the venue started (USD).
        self.funding_mark = 0.0
        self.funding_rate = 0.0
        self.mark_time = now
        self.last_ticks: Optional[int] = None
        #: (time, price, units) of trades in the last 24 h, for the ticker's 24 h fields.
        self.trades_24h: deque[tuple[float, float, int]] = deque()
        #: (time, price) of the trades in trades_24h that can still become the 24 h low (high):
        #: prices rising (falling) from the front, whose front is the low (high). A ticker reads
        #: them in O(1) instead of scanning a day of trades (add_trade, expire_trades).
        self.low_24h: deque[tuple[float, float]] = deque()
        self.high_24h: deque[tuple[float, float]] = deque()
        #: Volume in volume units (exact), value in USD.
        self.volume_24h = 0
        self.value_24h = 0.0
        #: (time, funding_mark, funding_rate), one per minute, for the 24 h funding fields.
        self.funding_samples: deque[tuple[float, float, float]] = deque()
        self.open_interest_units = 0
        #: [price, amount, direction, time, instrument, implied_taker], newest last.
        self.recent_trades: deque[list] = deque(maxlen=RECENT_TRADES)
        self.book_time = now

    # -- mark and funding --------------------------------------------------------------------

    def advance(self, index: float, fair: float, alpha: float, dampener: float, dt: float, now: float,
                ins: Instrument) -> None:
        """One market step of ``dt`` seconds: the new ``index``, the premium of ``fair`` over it
        averaged with weight ``alpha``, the mark, the funding rate (less ``dampener``, a
        fraction) and the funding mark; then the 24 h windows move on to ``now``."""
        self.index = index
        self.premium_ema += alpha * ((fair - index) - self.premium_ema)
        self.mark = index + self.premium_ema
        self.mark_time = now
        rate = self.premium_ema / index
        if abs(rate) <= dampener:
            rate = 0.0
        else:
            rate -= math.copysign(dampener, rate)
        self.funding_rate = rate
        self.funding_mark += rate * index * dt / DAY
        if not self.funding_samples or now - self.funding_samples[-1][0] >= 60.0:
            self.funding_samples.append((now, self.funding_mark, rate))
        while self.funding_samples and now - self.funding_samples[0][0] > DAY:
            self.funding_samples.popleft()
        self.expire_trades(now, ins)

    def collars(self, fraction: float) -> tuple[float, float]:
        """(collar_low, collar_high): ``fraction`` of the mark either side of it (docs/thalex-protocol.md §4.2)."""
        return self.mark * (1 - fraction), self.mark * (1 + fraction)

    def funding_24h(self) -> tuple[float, float]:
        """(funding paid per long contract over the last 24 h, average funding rate)."""
        if not self.funding_samples:
            return 0.0, self.funding_rate
        realised = self.funding_mark - self.funding_samples[0][1]
        average = sum(s[2] for s in self.funding_samples) / len(self.funding_samples)
        return realised, average

    # -- 24 h trade statistics ---------------------------------------------------------------

    def add_trade(self, now: float, price: float, units: int, amount: float) -> None:
        self.trades_24h.append((now, price, units))
        self.volume_24h += units
        self.value_24h += price * amount
        low, high = self.low_24h, self.high_24h
        while low and low[-1][1] >= price:
            low.pop()
        low.append((now, price))
        while high and high[-1][1] <= price:
            high.pop()
        high.append((now, price))

    def expire_trades(self, now: float, ins: Instrument) -> None:
        """Forget the trades older than a day."""
        trades = self.trades_24h
        while trades and now - trades[0][0] > DAY:
            _t, price, units = trades.popleft()
            self.volume_24h -= units
            self.value_24h -= price * ins.amount(units)
        for extreme in (self.low_24h, self.high_24h):
            while extreme and now - extreme[0][0] > DAY:
                extreme.popleft()
