"""Market data from the venue: ticker, book update, index price, public trade.

Each class mirrors the newest ``schemas/<record>/vN.avsc`` (tests/unit/test_schemas.py
fails when they drift). Field names are Thalex's (docs/thalex-protocol.md §3); exchange times
are float unix seconds as the venue sends them; ``*_at`` fields are local wall-clock
stage stamps (docs/architecture.md#d9-latency-stamps), timezone-aware UTC datetimes.
"""
from __future__ import annotations

from datetime import datetime
from typing import List, Optional

from models.base import AvroRecord


class Ticker(AvroRecord):
    """schemas/ticker: one ``ticker.<instrument>.<delay>`` notification."""

    instrument_name: str
    mark_price: float
    mark_timestamp: float
    delta: float
    index: float
    best_bid_price: Optional[float] = None
    best_bid_amount: Optional[float] = None
    best_ask_price: Optional[float] = None
    best_ask_amount: Optional[float] = None
    last_price: Optional[float] = None
    iv: Optional[float] = None
    forward: Optional[float] = None
    volume_24h: Optional[float] = None
    value_24h: Optional[float] = None
    low_price_24h: Optional[float] = None
    high_price_24h: Optional[float] = None
    change_24h: Optional[float] = None
    collar_low: Optional[float] = None
    collar_high: Optional[float] = None
    open_interest: Optional[float] = None
    funding_rate: Optional[float] = None
    funding_mark: Optional[float] = None
    realised_funding_24h: Optional[float] = None
    average_funding_rate_24h: Optional[float] = None
    # v2
    received_at: Optional[datetime] = None


class BookLevel(AvroRecord):
    """One ``[price, amount, outright_amount]`` level change; amount 0 empties the level."""

    price: float
    amount: float
    outright_amount: float


class BookTrade(AvroRecord):
    """One ``[price, amount, direction, timestamp, implied_taker]`` trade of a book notification."""

    price: float
    amount: float
    direction: str  # Avro enum Direction: buy | sell
    timestamp: float
    implied_taker: bool


class BookUpdate(AvroRecord):
    """schemas/book: one ``book.*`` notification plus the top of book after applying it."""

    instrument_name: str
    time: float
    snapshot: bool
    bid_changes: List[BookLevel]
    ask_changes: List[BookLevel]
    trades: Optional[List[BookTrade]] = None
    total_bid_amount: Optional[float] = None
    total_ask_amount: Optional[float] = None
    best_bid_price: Optional[float] = None
    best_bid_amount: Optional[float] = None
    best_ask_price: Optional[float] = None
    best_ask_amount: Optional[float] = None
    # v2
    received_at: Optional[datetime] = None


class IndexPrice(AvroRecord):
    """schemas/index: one ``price_index.<underlying>`` notification, keyed by index_name."""

    index_name: str
    price: float
    timestamp: float
    expiration_print_average: Optional[float] = None
    expiration_progress: Optional[float] = None
    expected_expiration_price: Optional[float] = None
    previous_settlement_price: Optional[float] = None
    # v2
    received_at: Optional[datetime] = None


class PublicTrade(AvroRecord):
    """schemas/trade: one public trade print (book ``trades`` item or ``recent_trades`` item)."""

    instrument_name: str
    price: float
    amount: float
    direction: str  # Avro enum Direction: buy | sell
    timestamp: float
    implied_taker: bool
    # v2
    received_at: Optional[datetime] = None
