"""The quote agent's decision: the ladder it wants in the book and what it priced from.

Mirrors the newest ``schemas/quote/vN.avsc``.
"""
from __future__ import annotations

from datetime import datetime
from typing import List, Optional

from models.base import AvroRecord


class QuoteLevel(AvroRecord):
    """One desired order: price rounded to the tick, amount to the volume tick."""

    price: float
    amount: float


class QuoteDecision(AvroRecord):
    """schemas/quote: desired bids and asks (best first), inputs, position and trigger."""

    instrument_name: str
    bids: List[QuoteLevel]
    asks: List[QuoteLevel]
    position: float
    reason: str
    fair_value: Optional[float] = None
    index: Optional[float] = None
    mark_price: Optional[float] = None
    mark_timestamp: Optional[float] = None
    best_bid_price: Optional[float] = None
    best_ask_price: Optional[float] = None
    funding_rate: Optional[float] = None
    # v2
    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None
