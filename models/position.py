"""Position snapshots: one Thalex PortfolioEntry per instrument (docs/thalex-protocol.md §4.11).

Mirrors the newest ``schemas/position/vN.avsc``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from models.base import AvroRecord


class Position(AvroRecord):
    """schemas/position: a position line; the venue sends it without a timestamp."""

    instrument_name: str
    position: float
    mark_price: float
    iv: Optional[float] = None
    index: Optional[float] = None
    start_price: Optional[float] = None
    average_price: Optional[float] = None
    unrealised_pnl: Optional[float] = None
    realised_pnl: Optional[float] = None
    entry_value: Optional[float] = None
    perpetual_funding_entry_value: Optional[float] = None
    unrealised_perpetual_funding: Optional[float] = None
    # v2
    received_at: Optional[datetime] = None
