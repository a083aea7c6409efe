"""Wall-clock times as the records carry them: timezone-aware UTC datetimes (the D9 stamps,
docs/architecture.md#d9-latency-stamps)."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(timezone.utc)


def utc(seconds: float) -> datetime:
    """Unix seconds as a UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def micros(start: datetime, end: datetime) -> int:
    """Whole microseconds from ``start`` to ``end``."""
    return round((end - start).total_seconds() * 1_000_000)
