"""An order as the engine keeps it, and its OrderStatus as the wire shows it (docs/thalex-protocol.md §4.10).

Prices and amounts are integers here (ticks and volume units, see instruments.py);
``status()`` turns them back into wire numbers. The status names are the protocol's
(app/exchange/protocol.py).
"""
from __future__ import annotations

from typing import Optional

from app.exchange.protocol import CANCELLED, CANCELLED_PARTIALLY_FILLED, FILLED, OPEN, PARTIALLY_FILLED
from app.venue.instruments import Instrument

BUY = 1
SELL = -1
DIRECTION_NAMES = {BUY: "buy", SELL: "sell"}
DIRECTIONS = {"buy": BUY, "sell": SELL}

LIMIT = "limit"
MARKET = "market"
GTC = "good_till_cancelled"
IOC = "immediate_or_cancel"


class Fill:
    """One execution of an order (an OrderFill on the wire)."""

    __slots__ = ("trade_id", "ticks", "units", "time", "maker_taker")

    def __init__(self, trade_id: str, ticks: int, units: int, time: float, maker_taker: str) -> None:
        self.trade_id = trade_id
        self.ticks = ticks
        self.units = units
        self.time = time
        self.maker_taker = maker_taker

    def to_json(self, instrument: Instrument) -> dict:
        return {
            "trade_id": self.trade_id,
            "price": instrument.price(self.ticks),
            "amount": instrument.amount(self.units),
            "time": self.time,
            "maker_taker": self.maker_taker,
            "leg_index": 0,
        }


class Order:
    """A live or finished order. ``ticks`` is None for market orders."""

    __slots__ = (
        "order_id", "account", "session", "instrument", "direction", "order_type", "time_in_force",
        "ticks", "units", "filled", "label", "client_order_id", "post_only", "reject_post_only",
        "reduce_only", "persistent", "is_quote", "create_time", "close_time", "delete_reason", "fills",
    )

    def __init__(
        self,
        *,
        order_id: str,
        account: str,
        session: int,
        instrument: Instrument,
        direction: int,
        order_type: str,
        time_in_force: str,
        ticks: Optional[int],
        units: int,
        label: Optional[str],
        client_order_id: Optional[int],
        post_only: bool,
        reject_post_only: bool,
        reduce_only: bool,
        persistent: bool,
        is_quote: bool,
        create_time: float,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.session = session
        self.instrument = instrument
        self.direction = direction
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.ticks = ticks
        #: The order's amount as inserted or last amended, in volume units.
        self.units = units
        self.filled = 0
        self.label = label
        self.client_order_id = client_order_id
        self.post_only = post_only
        self.reject_post_only = reject_post_only
        self.reduce_only = reduce_only
        self.persistent = persistent
        #: Inserted by mass_quote (or the house): replaced by later quotes, counted by MM protection.
        self.is_quote = is_quote
        self.create_time = create_time
        self.close_time: Optional[float] = None
        self.delete_reason: Optional[str] = None
        self.fills: list[Fill] = []

    @property
    def remaining(self) -> int:
        return 0 if self.delete_reason is not None else self.units - self.filled

    @property
    def live(self) -> bool:
        return self.delete_reason is None and self.filled < self.units

    @property
    def status_name(self) -> str:
        if self.delete_reason is None:
            if self.filled >= self.units:
                return FILLED
            return PARTIALLY_FILLED if self.filled > 0 else OPEN
        if self.delete_reason == "filled":
            return FILLED
        return CANCELLED_PARTIALLY_FILLED if self.filled > 0 else CANCELLED

    def status(self, change_reason: str, fills: Optional[list[Fill]] = None) -> dict:
        """The OrderStatus object; ``fills`` are the new fills of this update."""
        ins = self.instrument
        out = {
            "order_id": self.order_id,
            "order_type": self.order_type,
            "time_in_force": self.time_in_force,
            "instrument_name": ins.instrument_name,
            "direction": DIRECTION_NAMES[self.direction],
            "amount": ins.amount(self.units),
            "filled_amount": ins.amount(self.filled),
            "remaining_amount": ins.amount(self.remaining),
            "status": self.status_name,
            "fills": [f.to_json(ins) for f in (fills or ())],
            "change_reason": change_reason,
            "insert_reason": "client_request",
            "create_time": self.create_time,
            "persistent": self.persistent,
        }
        if self.ticks is not None:
            out["price"] = ins.price(self.ticks)
        if self.label is not None:
            out["label"] = self.label
        if self.client_order_id is not None:
            out["client_order_id"] = self.client_order_id
        if self.reduce_only:
            out["reduce_only"] = True
        if self.delete_reason is not None:
            out["delete_reason"] = self.delete_reason
            out["close_time"] = self.close_time
        return out
