"""What the analytics publish: markouts of our fills, PnL snapshots and quote quality per minute.

Mirror the newest ``schemas/markout/vN.avsc``, ``schemas/pnl_snapshot/vN.avsc`` and
``schemas/quote_quality/vN.avsc``. The analytics (app/analytics/) compute them as plain
dictionaries; the sink (app/pipeline/sink/tables.py) persists them. Enum-typed Avro fields
(direction, maker_taker) are plain strings here, as fastavro reads and writes them. Avro
field order puts the required fields first, because a Faust record's fields with defaults
must follow those without.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from models.base import AvroRecord


class Markout(AvroRecord):
    """schemas/markout: one fill's markout at one horizon, against the mark and the mid."""

    trade_id: str
    order_id: str
    instrument_name: str
    direction: str  # buy | sell
    maker_taker: str  # maker | taker
    price: float
    amount: float
    time: float
    horizon_seconds: int
    mark_after: float
    markout_bps_mark: float
    markout_mark: float
    mid_after: Optional[float] = None
    markout_bps: Optional[float] = None
    markout: Optional[float] = None


class PnlSnapshot(AvroRecord):
    """schemas/pnl_snapshot: position and PnL of one instrument at the end of a minute."""

    instrument_name: str
    time: datetime
    position: float
    average_price: float
    realized_pnl: float
    fees_maker: float
    fees_taker: float
    volume: float
    notional: float
    trades: int
    unrealized_pnl: Optional[float] = None
    mark_price: Optional[float] = None
    funding_pnl: Optional[float] = None
    net_pnl: Optional[float] = None


class QuoteQuality(AvroRecord):
    """schemas/quote_quality: how one instrument was quoted during one minute."""

    instrument_name: str
    time: datetime
    observed_seconds: float
    two_sided_seconds: float
    quotes: int
    quoted_amount: float
    filled_amount: float
    order_actions: int
    fills: int
    volume: float
    uptime: Optional[float] = None
    mean_spread: Optional[float] = None
    mean_bid_distance: Optional[float] = None
    mean_ask_distance: Optional[float] = None
    fill_ratio: Optional[float] = None
    order_to_trade: Optional[float] = None
    mean_abs_position: Optional[float] = None
    inventory_turnover: Optional[float] = None
