"""Our orders as the venue reports them: order status updates (acks) and fills.

Mirror the newest ``schemas/ack/vN.avsc`` and ``schemas/fill/vN.avsc``. Field
names are Thalex's OrderStatus / OrderFill (docs/thalex-protocol.md §4.10). Enum-typed Avro
fields (direction, maker_taker, order_type, time_in_force, status) are plain
strings here, as fastavro reads and writes them.
"""
from __future__ import annotations

from datetime import datetime
from typing import List, Optional

from models.base import AvroRecord


class OrderFill(AvroRecord):
    """One fill inside an order status (Thalex OrderFill; no fee: fees come with account trades)."""

    trade_id: str
    price: float
    amount: float
    maker_taker: str  # maker | taker
    leg_index: int
    time: Optional[float] = None


class OrderLeg(AvroRecord):
    """One leg of a combination order."""

    instrument_name: str
    quantity: float
    filled_amount: float
    remaining_amount: float


class Ack(AvroRecord):
    """schemas/ack: one order status update (insert/amend/cancel result or session.orders item)."""

    order_id: str
    order_type: str  # limit | market
    time_in_force: str  # good_till_cancelled | immediate_or_cancel
    direction: str  # buy | sell
    amount: float
    filled_amount: float
    remaining_amount: float
    status: str  # open | partially_filled | cancelled | cancelled_partially_filled | filled
    fills: List[OrderFill]
    change_reason: str
    insert_reason: str
    create_time: float
    persistent: bool
    instrument_name: Optional[str] = None
    legs: Optional[List[OrderLeg]] = None
    price: Optional[float] = None
    label: Optional[str] = None
    client_order_id: Optional[int] = None
    delete_reason: Optional[str] = None
    conditional_order_id: Optional[str] = None
    bot_id: Optional[str] = None
    close_time: Optional[float] = None
    reduce_only: Optional[bool] = None
    # v2
    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None
    order_sent_at: Optional[datetime] = None
    ack_received_at: Optional[datetime] = None


class Fill(AvroRecord):
    """schemas/fill: one of our fills with its order's context; trade_id is the natural key."""

    trade_id: str
    order_id: str
    instrument_name: str
    direction: str  # buy | sell
    maker_taker: str  # maker | taker
    price: float
    amount: float
    leg_index: int
    client_order_id: Optional[int] = None
    time: Optional[float] = None
    # v2
    order_sent_at: Optional[datetime] = None
    ack_received_at: Optional[datetime] = None
