"""Which per-minute snapshots of an instrument are out: the analytics_progress table's value.

The PnL snapshot of a minute is published when the instrument's first event of a later minute
arrives; the quote-quality record of a minute once event time has passed its end by the grace
period. This state remembers both, per instrument, in the table (so a restarted worker neither
skips nor repeats a snapshot it can know about); schemas/analytics_progress/v1.avsc.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


@dataclass(slots=True)
class AnalyticsProgress:
    instrument_name: str
    #: Start of the minute of the latest event applied to the position state (unix seconds).
    pnl_minute: Optional[float] = None
    #: Starts of the quote-quality minutes with data and no snapshot yet, oldest first.
    quality_open: list[float] = field(default_factory=list)
    #: Start of the newest quote-quality minute published.
    quality_published_until: Optional[float] = None
    offsets: dict[str, int] = field(default_factory=dict)

    def quality_opened(self, start: float) -> None:
        """A quote-quality minute got data; it will be published once due (not again if it was)."""
        if self.quality_published_until is not None and start <= self.quality_published_until:
            return
        index = bisect.bisect_left(self.quality_open, start)
        if index == len(self.quality_open) or self.quality_open[index] != start:
            self.quality_open.insert(index, start)

    def quality_due(self, latest_start: float) -> list[float]:
        """The open minutes starting at or before ``latest_start``, now counted as published."""
        index = bisect.bisect_right(self.quality_open, latest_start)
        due, self.quality_open = self.quality_open[:index], self.quality_open[index:]
        if due:
            self.quality_published_until = due[-1]
        return due

    def to_record(self) -> dict[str, Any]:
        return {"instrument_name": self.instrument_name, "pnl_minute": self.pnl_minute,
                "quality_open": list(self.quality_open), "quality_published_until": self.quality_published_until,
                "offsets": dict(self.offsets)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "AnalyticsProgress":
        return cls(record["instrument_name"], record["pnl_minute"], list(record["quality_open"]),
                   record["quality_published_until"], dict(record["offsets"]))
