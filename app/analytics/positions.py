"""Positions and P&L per instrument, from our fills, the ticker's mark and the venue's position lines.

The booking is the venue's own average-cost rule (app/venue/accounts.py ``Position.apply_fill``):
adding to a position moves its average entry price; closing ``c`` contracts of a position
entered at ``A`` at price ``P`` realises ``c·(P − A)·side`` (side +1 long, −1 short); a fill
that flips the position opens the rest at its price. Sizes are float contracts here, rounded
to 9 decimals after every fill so that a flat position reads exactly 0.0 and equals the
venue's integer units times the volume tick.

Fees are not in the fill records (Thalex sends them with account trades), so they are
computed from a ``FeeSchedule``: price · amount · rate, maker or taker by the fill.
Funding is the venue's: ``unrealised_perpetual_funding`` of the latest ``position`` record.

Sign conventions: positive P&L is money to the account; fees are positive when paid
(a negative rate is a rebate).

``offsets`` is the last Kafka offset applied per source record name; the agent layer uses it
to skip redeliveries (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once)
and this module only carries it. ``fill_offsets`` remembers which offset booked each of the
latest fills: a fill whose trade id was booked from another offset is the same trade on the
topic twice (at-least-once producers), which ``duplicate_fill`` tells the agent layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional

__all__ = ["FeeSchedule", "PositionState", "account_totals"]

#: Fills whose trade id a position state remembers (per instrument): a duplicate comes within
#: seconds of the first (a producer's retry) or within a minute (a fill recorded again when a
#: session opens, app/gateway/leftovers.py).
FILLS_REMEMBERED = 512

#: Decimals a position is rounded to after each fill (finer than any volume tick).
POSITION_DECIMALS = 9

_SIDES = {"buy": 1, "sell": -1}


def require_finite(name: str, value: Any) -> float:
    """``value`` as a float; ValueError if it is missing, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _optional_finite(name: str, value: Any) -> Optional[float]:
    return None if value is None else require_finite(name, value)


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Fee rates as fractions of notional (0.0002 is 2 bps); negative is a rebate."""

    maker_rate: float
    taker_rate: float

    def fee(self, price: float, amount: float, maker_taker: str) -> float:
        """The fee of one fill: price · amount · the rate of its maker/taker side."""
        if maker_taker == "maker":
            return price * amount * self.maker_rate
        if maker_taker == "taker":
            return price * amount * self.taker_rate
        raise ValueError(f"maker_taker must be maker or taker, got {maker_taker!r}")


@dataclass(slots=True)
class PositionState:
    """One instrument's position, P&L, fees, volume and latest mark; schemas/position_state/v2.avsc."""

    instrument_name: str
    #: Signed position in contracts: long > 0, short < 0.
    position: float = 0.0
    #: Average entry price of the open position; 0.0 when flat.
    average_price: float = 0.0
    #: Position P&L realised by closing fills (fees and funding excluded).
    realized_pnl: float = 0.0
    fees_maker: float = 0.0
    fees_taker: float = 0.0
    #: Sum of filled amounts (contracts).
    volume: float = 0.0
    #: Sum of price · amount over fills.
    notional: float = 0.0
    trades: int = 0
    maker_trades: int = 0
    #: Latest ticker mark and its exchange time (mark_timestamp, unix seconds).
    mark_price: Optional[float] = None
    mark_time: Optional[float] = None
    #: The venue's unrealised perpetual funding from the latest position record.
    funding_pnl: Optional[float] = None
    #: The position of the latest position record (to compare with ours).
    venue_position: Optional[float] = None
    #: Latest exchange time among the fills applied.
    last_fill_time: Optional[float] = None
    offsets: dict[str, int] = field(default_factory=dict)
    #: trade_id -> the offset that booked it, oldest first, at most FILLS_REMEMBERED.
    fill_offsets: dict[str, int] = field(default_factory=dict)

    # -- inputs ---------------------------------------------------------------------------

    def duplicate_fill(self, trade_id: str, offset: int) -> bool:
        """True if ``trade_id`` was booked from another offset: the same trade again. The same
        offset is a redelivery, which the offsets decide on."""
        booked = self.fill_offsets.get(trade_id)
        return booked is not None and booked != offset

    def remember_fill(self, trade_id: str, offset: int) -> None:
        self.fill_offsets[trade_id] = offset
        while len(self.fill_offsets) > FILLS_REMEMBERED:
            del self.fill_offsets[next(iter(self.fill_offsets))]

    def apply_fill(self, fill: Mapping[str, Any], fees: FeeSchedule) -> None:
        """Book one of our fills (a ``fill`` record); ValueError on a non-finite or non-positive
        amount, a non-finite price, or an unknown direction / maker_taker."""
        price = require_finite("price", fill["price"])
        amount = require_finite("amount", fill["amount"])
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {amount!r}")
        side = _SIDES.get(fill["direction"])
        if side is None:
            raise ValueError(f"direction must be buy or sell, got {fill['direction']!r}")
        maker_taker = fill["maker_taker"]
        fee = fees.fee(price, amount, maker_taker)  # validates maker_taker before anything changes
        fill_time = _optional_finite("time", fill.get("time"))

        held = self.position
        if held == 0 or (held > 0) == (side > 0):
            size = abs(held)
            self.average_price = (self.average_price * size + price * amount) / (size + amount)
            self.position = round(held + side * amount, POSITION_DECIMALS)
        else:
            closed = min(amount, abs(held))
            held_side = 1 if held > 0 else -1
            self.realized_pnl += closed * (price - self.average_price) * held_side
            self.position = round(held + side * amount, POSITION_DECIMALS)
            if self.position == 0:
                self.average_price = 0.0
            elif (self.position > 0) != (held > 0):  # flipped: the rest opens at this fill
                self.average_price = price

        if maker_taker == "maker":
            self.fees_maker += fee
            self.maker_trades += 1
        else:
            self.fees_taker += fee
        self.volume += amount
        self.notional += price * amount
        self.trades += 1
        if fill_time is not None and (self.last_fill_time is None or fill_time > self.last_fill_time):
            self.last_fill_time = fill_time

    def apply_ticker(self, ticker: Mapping[str, Any]) -> bool:
        """Take the ticker's mark unless it is older than the one held; True if taken."""
        mark_time = require_finite("mark_timestamp", ticker["mark_timestamp"])
        mark_price = require_finite("mark_price", ticker["mark_price"])
        if self.mark_time is not None and mark_time < self.mark_time:
            return False
        self.mark_price, self.mark_time = mark_price, mark_time
        return True

    def apply_position(self, position: Mapping[str, Any]) -> None:
        """Take the venue's position and unrealised funding from a ``position`` record
        (the venue sends it without a time, so the latest one applied wins)."""
        self.venue_position = require_finite("position", position["position"])
        self.funding_pnl = _optional_finite("unrealised_perpetual_funding",
                                            position.get("unrealised_perpetual_funding"))

    # -- derived --------------------------------------------------------------------------

    @property
    def fees(self) -> float:
        return self.fees_maker + self.fees_taker

    @property
    def unrealized_pnl(self) -> Optional[float]:
        """position · (mark − average price); None until a mark arrives."""
        if self.mark_price is None:
            return None
        return self.position * (self.mark_price - self.average_price) if self.position else 0.0

    @property
    def net_pnl(self) -> Optional[float]:
        """realized + unrealized + funding − fees; None without a mark. Funding counts as 0
        until a position record brings it (instruments without funding never do)."""
        unrealized = self.unrealized_pnl
        if unrealized is None:
            return None
        return self.realized_pnl + unrealized + (self.funding_pnl or 0.0) - self.fees

    def snapshot(self, time: datetime) -> dict[str, Any]:
        """The ``pnl_snapshot`` record (schemas/pnl_snapshot/) at ``time``: the end of the minute it describes."""
        return {
            "instrument_name": self.instrument_name,
            "time": time,
            "position": self.position,
            "average_price": self.average_price,
            "realized_pnl": self.realized_pnl,
            "fees_maker": self.fees_maker,
            "fees_taker": self.fees_taker,
            "volume": self.volume,
            "notional": self.notional,
            "trades": self.trades,
            "unrealized_pnl": self.unrealized_pnl,
            "mark_price": self.mark_price,
            "funding_pnl": self.funding_pnl,
            "net_pnl": self.net_pnl,
        }

    # -- state record ---------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The state as a schemas/position_state/v2.avsc record."""
        return {
            "instrument_name": self.instrument_name,
            "position": self.position,
            "average_price": self.average_price,
            "realized_pnl": self.realized_pnl,
            "fees_maker": self.fees_maker,
            "fees_taker": self.fees_taker,
            "volume": self.volume,
            "notional": self.notional,
            "trades": self.trades,
            "maker_trades": self.maker_trades,
            "mark_price": self.mark_price,
            "mark_time": self.mark_time,
            "funding_pnl": self.funding_pnl,
            "venue_position": self.venue_position,
            "last_fill_time": self.last_fill_time,
            "offsets": dict(self.offsets),
            "fill_offsets": dict(self.fill_offsets),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "PositionState":
        return cls(
            instrument_name=record["instrument_name"],
            position=record["position"],
            average_price=record["average_price"],
            realized_pnl=record["realized_pnl"],
            fees_maker=record["fees_maker"],
            fees_taker=record["fees_taker"],
            volume=record["volume"],
            notional=record["notional"],
            trades=record["trades"],
            maker_trades=record["maker_trades"],
            mark_price=record.get("mark_price"),
            mark_time=record.get("mark_time"),
            funding_pnl=record.get("funding_pnl"),
            venue_position=record.get("venue_position"),
            last_fill_time=record.get("last_fill_time"),
            offsets=dict(record.get("offsets") or {}),
            # oldest first, whatever order the map came back in
            fill_offsets=dict(sorted((record.get("fill_offsets") or {}).items(), key=lambda item: item[1])),
        )


def account_totals(states: Iterable[PositionState]) -> dict[str, Any]:
    """Sums over instruments. A missing unrealized P&L (no mark yet) or funding counts as 0,
    so ``net_pnl`` is always realized + unrealized + funding − fees of these totals;
    ``unmarked`` counts the open positions without a mark, whose value the totals miss."""
    totals: dict[str, Any] = {
        "instruments": 0, "realized_pnl": 0.0, "unrealized_pnl": 0.0, "fees_maker": 0.0,
        "fees_taker": 0.0, "fees": 0.0, "funding_pnl": 0.0, "net_pnl": 0.0, "volume": 0.0,
        "notional": 0.0, "trades": 0, "unmarked": 0,
    }
    for state in states:
        unrealized = state.unrealized_pnl
        totals["instruments"] += 1
        totals["realized_pnl"] += state.realized_pnl
        totals["unrealized_pnl"] += unrealized or 0.0
        totals["fees_maker"] += state.fees_maker
        totals["fees_taker"] += state.fees_taker
        totals["funding_pnl"] += state.funding_pnl or 0.0
        totals["volume"] += state.volume
        totals["notional"] += state.notional
        totals["trades"] += state.trades
        if unrealized is None and state.position:
            totals["unmarked"] += 1
    totals["fees"] = totals["fees_maker"] + totals["fees_taker"]
    totals["net_pnl"] = totals["realized_pnl"] + totals["unrealized_pnl"] + totals["funding_pnl"] - totals["fees"]
    return totals
