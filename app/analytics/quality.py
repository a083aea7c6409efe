"""Quote quality: how long we quoted both sides, how tight, how much we quoted and how much of it filled.

Two states, both keyed by instrument (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once):

- ``RestingQuotes`` follows our live orders from the acks. Between two consecutive acks our
  book does not change, so the time from one ack to the next is an interval during which we
  were either quoting both sides within ``QualityConfig.max_spread_bps`` or not. Each ack
  closes the interval that began at the previous one (``AckEffect.interval``) and says how much
  it added to the book (``AckEffect.quoted_amount``).
- ``QualityWindow`` sums one minute of that, of the quote decisions and of the fills; its
  ``record()`` is the ``quote_quality`` record. ``split_interval`` credits an interval to the
  minute windows it spans.

Ack times are the local ``ack_received_at`` stamps (docs/architecture.md#d9-latency-stamps), so an
interval measures what our book was between the moments we learnt of its changes. Records are
dicts as fastavro decodes them (models/orders.py, models/quote.py); the states' own records
are ``schemas/resting_quotes`` and ``schemas/quote_window``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

#: Order statuses under which an order rests in the book (with remaining_amount > 0).
LIVE_STATUSES = frozenset({"open", "partially_filled"})
#: Ack change reasons that are our own order actions (counted for order-to-trade).
ORDER_ACTIONS = frozenset({"insert", "amend", "cancel"})


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """What counts as quoting: both sides live and no wider than ``max_spread_bps`` of their mid."""

    max_spread_bps: float = 50.0


@dataclass(frozen=True, slots=True)
class AckEffect:
    """What one ack means for quote quality.

    ``interval`` is (start, end, two_sided) of the time since the previous ack, in unix seconds,
    with two_sided saying whether our book was quoting both sides during it; None for the first
    ack, an ack without ``ack_received_at``, and an ack older than the newest one seen.
    ``quoted_amount`` is the amount this ack put in the book.
    """

    interval: Optional[tuple[float, float, bool]]
    quoted_amount: float


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """One of our live orders: its side, limit price, order amount (as inserted or amended) and what is left."""

    direction: str
    price: float
    amount: float
    remaining: float


@dataclass(slots=True)
class RestingQuotes:
    """Our live orders of one instrument, as the acks report them, and the time of the newest ack."""

    instrument_name: str
    orders: dict[str, RestingOrder] = field(default_factory=dict)
    #: ack_received_at of the newest ack seen, unix seconds; None before the first.
    last_ack_time: Optional[float] = None
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def best_bid(self) -> Optional[float]:
        prices = [o.price for o in self.orders.values() if o.direction == "buy"]
        return max(prices) if prices else None

    @property
    def best_ask(self) -> Optional[float]:
        prices = [o.price for o in self.orders.values() if o.direction == "sell"]
        return min(prices) if prices else None

    def two_sided(self, config: QualityConfig = QualityConfig()) -> bool:
        """Both sides have a live order and the best ask and bid are within the configured spread of their mid."""
        bid, ask = self.best_bid, self.best_ask
        if bid is None or ask is None:
            return False
        mid = (ask + bid) / 2
        if mid <= 0:
            return False
        return (ask - bid) / mid * 1e4 <= config.max_spread_bps

    def apply_ack(self, ack: Mapping[str, Any], config: QualityConfig = QualityConfig()) -> AckEffect:
        """Apply one ack; returns the interval it closed and the amount it quoted.

        The interval is judged on the book as it was before this ack (that was the book
        during the interval). An ack older than the newest one still updates its order,
        because the partition's order is the order the gateway learnt things in; it only
        yields no interval, so time is never counted twice.
        """
        amount = _finite(ack["amount"], "amount")
        remaining = _finite(ack["remaining_amount"], "remaining_amount")
        price = ack.get("price")
        if price is not None:
            price = _finite(price, "price")
        order_id = ack["order_id"]

        interval = None
        time = _unix_seconds(ack.get("ack_received_at"))
        if time is not None and (self.last_ack_time is None or time >= self.last_ack_time):
            if self.last_ack_time is not None:
                interval = (self.last_ack_time, time, self.two_sided(config))
            self.last_ack_time = time

        reason = ack["change_reason"]
        previous = self.orders.get(order_id)
        if reason == "insert":
            quoted = amount
        elif reason == "amend" and previous is not None:
            quoted = max(0.0, amount - previous.amount)
        else:
            # Cancels, fills and snapshots add nothing; nor does an amend of an order never seen,
            # whose previous amount is unknown.
            quoted = 0.0

        if ack["status"] in LIVE_STATUSES and remaining > 0 and price is not None:
            self.orders[order_id] = RestingOrder(ack["direction"], price, amount, remaining)
        else:
            self.orders.pop(order_id, None)
        return AckEffect(interval, quoted)

    def to_record(self) -> dict[str, Any]:
        return {
            "instrument_name": self.instrument_name,
            "orders": {order_id: {"direction": o.direction, "price": o.price, "amount": o.amount,
                                  "remaining": o.remaining}
                       for order_id, o in self.orders.items()},
            "last_ack_time": self.last_ack_time,
            "offsets": dict(self.offsets),
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> RestingQuotes:
        orders = {order_id: RestingOrder(o["direction"], o["price"], o["amount"], o["remaining"])
                  for order_id, o in d.get("orders", {}).items()}
        return cls(d["instrument_name"], orders, d.get("last_ack_time"), dict(d.get("offsets", {})))


@dataclass(slots=True)
class QualityWindow:
    """One instrument's quote quality over one window (a minute) starting at ``start`` (unix seconds)."""

    instrument_name: str
    start: float
    #: Seconds of ack intervals credited to this window, and the part of them quoted two-sided.
    observed_seconds: float = 0.0
    two_sided_seconds: float = 0.0
    #: Quote decisions with both sides and a fair value: the count behind the spread and distance sums.
    quotes: int = 0
    spread_sum: float = 0.0
    bid_distance_sum: float = 0.0
    ask_distance_sum: float = 0.0
    quoted_amount: float = 0.0
    filled_amount: float = 0.0
    fills: int = 0
    order_actions: int = 0
    sum_abs_position: float = 0.0
    position_samples: int = 0
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def volume(self) -> float:
        """The amount we traded in the window: the filled amount (turnover's numerator)."""
        return self.filled_amount

    def add_interval(self, seconds: float, two_sided: bool) -> None:
        seconds = _finite(seconds, "seconds")
        self.observed_seconds += seconds
        if two_sided:
            self.two_sided_seconds += seconds

    def add_quote(self, q: Mapping[str, Any]) -> None:
        """A quote decision: its position always; its spread and distances when it has both sides and a fair value."""
        # Every quote decision comes here (a backtest's skipped ones too): the numbers are
        # checked together, each one by name only when that check fails.
        position = float(q["position"])
        bids, asks, fair_value = q["bids"], q["asks"], q.get("fair_value")
        if not bids or not asks or fair_value is None:
            self.sum_abs_position += abs(_finite(position, "position"))
            self.position_samples += 1
            return
        bid, ask, fair_value = float(bids[0]["price"]), float(asks[0]["price"]), float(fair_value)
        if not math.isfinite(position + bid + ask + fair_value):
            for value, name in ((position, "position"), (bid, "bid price"), (ask, "ask price"),
                                (fair_value, "fair_value")):
                _finite(value, name)
        self.sum_abs_position += abs(position)
        self.position_samples += 1
        self.quotes += 1
        self.spread_sum += ask - bid
        self.bid_distance_sum += fair_value - bid
        self.ask_distance_sum += ask - fair_value

    def add_ack(self, ack: Mapping[str, Any], quoted_amount: float) -> None:
        """An ack and the amount it quoted (``AckEffect.quoted_amount``)."""
        self.quoted_amount += _finite(quoted_amount, "quoted_amount")
        if ack["change_reason"] in ORDER_ACTIONS:
            self.order_actions += 1

    def add_fill(self, f: Mapping[str, Any]) -> None:
        self.filled_amount += _finite(f["amount"], "amount")
        self.fills += 1

    def record(self) -> dict[str, Any]:
        """The ``quote_quality`` record of this window; a ratio is None when its denominator is 0."""
        mean_abs_position = _ratio(self.sum_abs_position, self.position_samples)
        return {
            "instrument_name": self.instrument_name,
            "time": datetime.fromtimestamp(self.start, tz=timezone.utc),
            "observed_seconds": self.observed_seconds,
            "two_sided_seconds": self.two_sided_seconds,
            "uptime": _ratio(self.two_sided_seconds, self.observed_seconds),
            "quotes": self.quotes,
            "mean_spread": _ratio(self.spread_sum, self.quotes),
            "mean_bid_distance": _ratio(self.bid_distance_sum, self.quotes),
            "mean_ask_distance": _ratio(self.ask_distance_sum, self.quotes),
            "quoted_amount": self.quoted_amount,
            "filled_amount": self.filled_amount,
            "fill_ratio": _ratio(self.filled_amount, self.quoted_amount),
            "order_actions": self.order_actions,
            "fills": self.fills,
            "order_to_trade": _ratio(self.order_actions, self.fills),
            "volume": self.volume,
            "mean_abs_position": mean_abs_position,
            "inventory_turnover": _ratio(self.volume, mean_abs_position or 0.0),
        }

    def to_record(self) -> dict[str, Any]:
        return {
            "instrument_name": self.instrument_name, "start": self.start,
            "observed_seconds": self.observed_seconds, "two_sided_seconds": self.two_sided_seconds,
            "quotes": self.quotes, "spread_sum": self.spread_sum,
            "bid_distance_sum": self.bid_distance_sum, "ask_distance_sum": self.ask_distance_sum,
            "quoted_amount": self.quoted_amount, "filled_amount": self.filled_amount, "fills": self.fills,
            "order_actions": self.order_actions, "sum_abs_position": self.sum_abs_position,
            "position_samples": self.position_samples, "offsets": dict(self.offsets),
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> QualityWindow:
        return cls(
            d["instrument_name"], d["start"], d["observed_seconds"], d["two_sided_seconds"], d["quotes"],
            d["spread_sum"], d["bid_distance_sum"], d["ask_distance_sum"],
            d["quoted_amount"], d["filled_amount"], d["fills"], d["order_actions"], d["sum_abs_position"],
            d["position_samples"], dict(d.get("offsets", {})),
        )


def split_interval(start: float, end: float, size: float = 60.0) -> list[tuple[float, float]]:
    """The (window start, seconds) pieces of [start, end) in the windows of ``size`` seconds aligned to the epoch.

    Empty when end <= start. Each piece is the difference of consecutive boundaries, so the
    pieces add up to end - start up to float rounding.
    """
    start, end, size = _finite(start, "start"), _finite(end, "end"), _finite(size, "size")
    if size <= 0:
        raise ValueError(f"window size must be positive, not {size}")
    pieces = []
    index = _window_index(start, size)
    at = start
    while at < end:
        window, boundary = index * size, min((index + 1) * size, end)
        if boundary <= at:
            raise ValueError(f"window size {size} is below the float resolution at {at}")
        pieces.append((window, boundary - at))
        at, index = boundary, index + 1
    return pieces


def _window_index(time: float, size: float) -> int:
    """The number of the epoch-aligned window holding ``time``; corrected where time / size rounded across a boundary."""
    index = math.floor(time / size)
    if index * size > time:
        index -= 1
    elif (index + 1) * size <= time:
        index += 1
    return index


def _unix_seconds(at: Optional[datetime]) -> Optional[float]:
    if at is None:
        return None
    if at.tzinfo is None:  # fastavro's timestamp-micros are aware UTC; a naive stamp is read as UTC too
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()


def _finite(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite: {value}")
    return value


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return numerator / denominator if denominator else None
