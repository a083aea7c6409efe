"""What passes between the quote agent and the gateway: stamps in, actions back, acks and fills out.

- ``QuoteStamps``: the stamps of the decision behind a reconcile (received_at, quoted_at);
- ``Actions``: what one reconcile sent, and what it left for a later one;
- ``Ack`` per order status and ``Fill`` per new fill (models/orders.py), built here (the order
  tracker's default builders, app/gateway/tracker.py). Both carry the latency stamps
  (docs/architecture.md#d9-latency-stamps) of the quote whose request last changed the
  order: received_at and quoted_at of the decision, order_sent_at of the request, and
  ack_received_at of the update. Building one raises KeyError, TypeError or
  ValueError when the venue left out a required field; the tracker counts those as
  unrecordable updates.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Optional, Protocol

from models.orders import Ack, Fill, OrderFill, OrderLeg


class QuoteStamps(NamedTuple):
    """The stamps of the quote behind a reconcile (a QuoteDecision record has the same fields)."""

    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None


class Actions(NamedTuple):
    """What one reconcile sent, and how many actions it had to leave for a later tick."""

    inserts: int = 0
    amends: int = 0
    cancels: int = 0
    skipped: int = 0
    #: private/mass_quote requests (mass quoting: at most one per reconcile).
    quotes: int = 0


class Stamped(Protocol):
    """The stamps of the quote behind an order (a TrackedOrder has them)."""

    received_at: Optional[datetime]
    quoted_at: Optional[datetime]
    order_sent_at: Optional[datetime]


def fills_of(status: dict) -> list[dict]:
    """The fills listed in an OrderStatus (docs/thalex-protocol.md §4.10)."""
    # Required by the API schema, but missing in a real capture (docs/thalex-protocol.md §10).
    fills = status.get("fills")
    return [f for f in fills if isinstance(f, dict)] if isinstance(fills, list) else []


def ack_record(status: dict, order: Optional[Stamped], ack_received_at: datetime) -> Ack:
    """models.orders.Ack of one OrderStatus (docs/thalex-protocol.md §4.10); KeyError/TypeError
    if a required field is missing."""
    legs = status.get("legs")
    return Ack(
        order_id=str(status["order_id"]),
        order_type=status["order_type"],
        time_in_force=status["time_in_force"],
        direction=status["direction"],
        amount=float(status["amount"]),
        filled_amount=float(status["filled_amount"]),
        remaining_amount=float(status["remaining_amount"]),
        status=status["status"],
        fills=[OrderFill(trade_id=str(f["trade_id"]), price=float(f["price"]), amount=float(f["amount"]),
                         maker_taker=f["maker_taker"], leg_index=int(f.get("leg_index", 0)), time=f.get("time"))
               for f in fills_of(status)],
        change_reason=status["change_reason"],
        insert_reason=status["insert_reason"],
        create_time=float(status["create_time"]),
        persistent=bool(status["persistent"]),
        instrument_name=status.get("instrument_name"),
        legs=None if not isinstance(legs, list) else [
            OrderLeg(instrument_name=leg["instrument_name"], quantity=float(leg["quantity"]),
                     filled_amount=float(leg["filled_amount"]), remaining_amount=float(leg["remaining_amount"]))
            for leg in legs],
        price=None if status.get("price") is None else float(status["price"]),
        label=status.get("label"),
        client_order_id=status.get("client_order_id"),
        delete_reason=status.get("delete_reason"),
        conditional_order_id=status.get("conditional_order_id"),
        bot_id=status.get("bot_id"),
        close_time=status.get("close_time"),
        reduce_only=status.get("reduce_only"),
        received_at=order.received_at if order else None,
        quoted_at=order.quoted_at if order else None,
        order_sent_at=order.order_sent_at if order else None,
        ack_received_at=ack_received_at,
    )


def fill_record(raw: dict, status: dict, order: Optional[Stamped], trade_id: str, order_id: str,
                instrument: str, direction: str, ack_received_at: datetime) -> Fill:
    """models.orders.Fill of one fill (``raw``, an item of ``fills_of(status)``); KeyError,
    TypeError or ValueError if a required field is missing or not a number."""
    return Fill(trade_id=trade_id, order_id=order_id, instrument_name=instrument, direction=direction,
                maker_taker=raw["maker_taker"], price=float(raw["price"]), amount=float(raw["amount"]),
                leg_index=int(raw.get("leg_index", 0)), client_order_id=status.get("client_order_id"),
                time=raw.get("time"), order_sent_at=order.order_sent_at if order else None,
                ack_received_at=ack_received_at)
