"""Latency samples: one measured pipeline stage of one event (docs/architecture.md#d9-latency-stamps).

Mirrors the newest ``schemas/latency/vN.avsc``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from models.base import AvroRecord


class LatencySample(AvroRecord):
    """schemas/latency: stage ``<from>_to_<to>``, its start and end, and its duration in µs."""

    stage: str
    instrument_name: str
    start_at: datetime
    end_at: datetime
    duration_us: int
    # v2: the traced event's D9 stamps, when known
    received_at: Optional[datetime] = None
    quoted_at: Optional[datetime] = None
    order_sent_at: Optional[datetime] = None
    ack_received_at: Optional[datetime] = None
    persisted_at: Optional[datetime] = None
