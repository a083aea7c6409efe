"""OHLCV candles of public trades and of the ticker's mark, per instrument and time window.

A candle is keyed by (instrument, window start); ``window_start`` gives the window of an
exchange time, aligned like the database's buckets (timescale/0004_views.sql: date_bin from
2000-01-01, which is a whole number of minutes after the unix epoch, so flooring to the size
from the epoch gives the same windows for 1 s and 1 min).

Records can arrive out of time order (a window is fed by every record whose time falls in it,
in partition order), so open and close go by time, not by arrival: open is the price of the
earliest time, close of the latest; on a tie the one seen first keeps the open and the one
seen last takes the close. Mark candles have amount 0: their count is the number of ticks.

``offsets`` is the last Kafka offset applied per source record name, for the agent layer
(docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once); carried, not read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from app.analytics.positions import require_finite

__all__ = ["Candle", "mark_candle_input", "trade_candle_input", "window_start"]


def _checked(price: Any, amount: Any, time: Any) -> tuple[float, float, float]:
    price, amount, time = (require_finite("price", price), require_finite("amount", amount),
                           require_finite("time", time))
    if amount < 0:
        raise ValueError(f"amount must not be negative, got {amount!r}")
    return price, amount, time


@dataclass(slots=True)
class Candle:
    """One window's open, high, low, close, volume and count; schemas/candle/v1.avsc."""

    open: float
    high: float
    low: float
    close: float
    #: Sum of traded amounts (0 for mark candles).
    volume: float
    #: Number of trades (or ticks) in the window.
    count: int
    #: Exchange times (unix seconds) of the open and the close.
    open_time: float
    close_time: float
    offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def first(cls, price: float, amount: float, time: float) -> "Candle":
        """A candle of one trade or tick; ValueError on a non-finite input or negative amount."""
        price, amount, time = _checked(price, amount, time)
        return cls(open=price, high=price, low=price, close=price, volume=amount, count=1,
                   open_time=time, close_time=time)

    def add(self, price: float, amount: float, time: float) -> None:
        """Add one trade or tick; ValueError on a non-finite input or negative amount."""
        price, amount, time = _checked(price, amount, time)
        if time < self.open_time:
            self.open, self.open_time = price, time
        if time >= self.close_time:
            self.close, self.close_time = price, time
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.volume += amount
        self.count += 1

    def to_record(self) -> dict[str, Any]:
        """The state as a schemas/candle/v1.avsc record."""
        return {
            "open": self.open, "high": self.high, "low": self.low, "close": self.close,
            "volume": self.volume, "count": self.count, "open_time": self.open_time,
            "close_time": self.close_time, "offsets": dict(self.offsets),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Candle":
        return cls(open=record["open"], high=record["high"], low=record["low"], close=record["close"],
                   volume=record["volume"], count=record["count"], open_time=record["open_time"],
                   close_time=record["close_time"], offsets=dict(record.get("offsets") or {}))


def trade_candle_input(trade: Mapping[str, Any]) -> tuple[float, float, float]:
    """(price, amount, exchange time) of a public ``trade`` record."""
    return _checked(trade["price"], trade["amount"], trade["timestamp"])


def mark_candle_input(ticker: Mapping[str, Any]) -> tuple[float, float, float]:
    """(mark price, 0.0, mark time) of a ``ticker`` record."""
    return _checked(ticker["mark_price"], 0.0, ticker["mark_timestamp"])


def window_start(time: float, size_seconds: float) -> float:
    """Start of the ``size_seconds`` window holding ``time`` (unix seconds), aligned to the epoch.

    ``math.fmod`` is exact, so the window of a time just below a boundary does not hang on
    the rounding of a division."""
    time, size = require_finite("time", time), require_finite("size_seconds", size_seconds)
    if size <= 0:
        raise ValueError(f"size_seconds must be positive, got {size_seconds!r}")
    remainder = math.fmod(time, size)
    if remainder < 0:
        remainder += size
    return time - remainder
