"""The analytics agents' settings: one frozen config, filled from ``CRYPTICS_ANALYTICS_*`` by
app/settings.py. Each field's one-line doc is in its ``metadata["doc"]``."""
from __future__ import annotations

import math
from dataclasses import dataclass

from app.config import SettingError, documented


@dataclass(frozen=True)
class AnalyticsConfig:
    """What the analytics agents (agents/analytics.py) compute with."""

    enabled: bool = documented(True, "run the analytics agents and their tables in this worker")
    batch_size: int = documented(2000, "events taken from the input topics per batch; each table key is written once per batch")
    batch_age: float = documented(0.5, "seconds a batch waits for more events: the most the tables lag behind their topics")
    maker_fee_rate: float = documented(0.0001, "fee rate on price x amount of a maker fill (Thalex perpetuals tier 1, docs/thalex-protocol.md §5.4)")
    taker_fee_rate: float = documented(0.0005, "fee rate on price x amount of a taker fill (docs/thalex-protocol.md §5.4)")
    uptime_max_spread_bps: float = documented(50.0, "quote quality: both sides count as quoted while our best ask and best bid are at most this many bps of their mid apart")
    second_windows_kept: float = documented(600.0, "seconds a 1-second candle window is kept before it expires")
    minute_windows_kept: float = documented(21600.0, "seconds a 1-minute window (candles, latency, quote quality) is kept before it expires")
    snapshot_grace: float = documented(5.0, "seconds after a minute ends before its quote-quality snapshot is published (late events of the minute still count in the table)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise SettingError("batch_size", f"analytics batch_size must be >= 1, got {self.batch_size!r}")
        for name in ("batch_age", "uptime_max_spread_bps", "second_windows_kept", "minute_windows_kept"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingError(name, f"analytics {name} must be > 0, got {value!r}")
        for name in ("maker_fee_rate", "taker_fee_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -0.01 <= value <= 0.01):
                raise SettingError(name, f"analytics {name} must be a rate in [-0.01, 0.01] (a rebate is negative), got {value!r}")
        if not (math.isfinite(self.snapshot_grace) and self.snapshot_grace >= 0):
            raise SettingError("snapshot_grace", f"analytics snapshot_grace must be >= 0, got {self.snapshot_grace!r}")
        if self.second_windows_kept < 1 or self.minute_windows_kept < 60:
            raise SettingError("minute_windows_kept", "analytics windows must be kept at least one window long")
