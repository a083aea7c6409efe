"""Quote parameters: every knob of the quote core in one frozen dataclass, with defaults and docs.

The defaults reproduce the reference quoter (docs/thalex-protocol.md §7.1, ``perp_quoter.py``)
exactly when the position is zero: fair value = index, two levels per side at 25 and 30 ticks
from it, sizes 0.2 and 0.4, no skew. Each field's one-line doc is in its ``metadata["doc"]``
(``dataclasses.fields(QuoteParams)``), so tables and settings can be generated from here.

Fields are simple types (str, float, bool, tuple of floats); ``parse_sizes`` reads a
comma-separated size list such as ``"0.2,0.4"``. The core (app/trading/quote.py) takes the numbers.
Two numbers of quoting are not here, because another component owns them: the position limit
is the risk gate's ``RiskLimits.max_position`` (``CRYPTICS_RISK_MAX_POSITION``; the core takes
it as an argument, from whoever builds the ``Quoter``), and the amend threshold is the order
gateway's ``GatewayParams.amend_threshold_ticks`` (``CRYPTICS_GATEWAY_AMEND_THRESHOLD_TICKS``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

from app.config import SettingError, documented
from app.trading._quote_py import MAX_LEVELS_PER_SIDE

FAIR_VALUE_SOURCES = ("index", "mark", "mid")
MODES = ("linear", "avellaneda_stoikov")
SPREAD_UNITS = ("ticks", "bps")


def parse_sizes(text: str) -> Tuple[float, ...]:
    """``"0.2, 0.4"`` → ``(0.2, 0.4)``; an empty string is no levels."""
    parts = [part.strip() for part in text.split(",")]
    if parts == [""]:
        return ()
    try:
        return tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(f"expected comma-separated sizes such as '0.2,0.4', got {text!r}") from None


@dataclass(frozen=True)
class QuoteParams:
    """Parameters of the quote core; validated on construction (``validate``)."""

    fair_value_source: str = documented("index", "which input is the fair value s: index, mark or mid (mid needs both sides of the book)")
    mode: str = documented("linear", "linear: fixed half-spread and linear skew; avellaneda_stoikov: reservation price and optimal spread")
    spread_unit: str = documented("ticks", "unit of half_spread, level_step and price_skew: ticks, or bps of the fair value")
    half_spread: float = documented(25.0, "distance from the centre to each side's first level, in spread_unit (linear mode; perp_quoter's SPREAD)")
    level_step: float = documented(5.0, "distance between consecutive levels of a side, in spread_unit (perp_quoter's BID_STEP/ASK_STEP)")
    bid_sizes: Tuple[float, ...] = documented((0.2, 0.4), "nominal size of each bid level, best first; its length is the number of bid levels")
    ask_sizes: Tuple[float, ...] = documented((0.2, 0.4), "nominal size of each ask level, best first; its length is the number of ask levels")
    target_position: float = documented(0.0, "position the skews pull towards; inventory = position - target_position")
    price_skew: float = documented(0.0, "linear mode: centre shift against the inventory at a full position limit's worth of it (CRYPTICS_RISK_MAX_POSITION), in spread_unit (0 = off)")
    size_skew: float = documented(0.0, "fraction in [0, 1]: sizes scale by 1 -/+ size_skew x inventory/position limit (long: smaller bids, larger asks; 0 = off)")
    post_only: bool = documented(True, "never cross the book: bids at most best_ask - 1 tick, asks at least best_bid + 1 tick")
    as_gamma: float = documented(0.03, "Avellaneda-Stoikov risk aversion gamma, per (price unit x inventory lot)")
    as_kappa: float = documented(0.1, "Avellaneda-Stoikov order-arrival decay kappa, per price unit")
    as_horizon_seconds: float = documented(60.0, "Avellaneda-Stoikov horizon tau, in seconds")
    as_inventory_lot: float = documented(1.0, "Avellaneda-Stoikov inventory unit: q = (position - target_position) / as_inventory_lot")
    volatility_half_life_seconds: float = documented(300.0, "half-life of the EWMA volatility estimator, in seconds")
    min_interval_seconds: float = documented(0.0, "quote agent: least time between two quote computations of one instrument (0: on every market event)")

    def __post_init__(self) -> None:
        # Lists (say, from JSON) become tuples so the object stays hashable and immutable.
        for name in ("bid_sizes", "ask_sizes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        _choice("fair_value_source", self.fair_value_source, FAIR_VALUE_SOURCES)
        _choice("mode", self.mode, MODES)
        _choice("spread_unit", self.spread_unit, SPREAD_UNITS)
        _number("half_spread", self.half_spread, minimum=0.0)
        _number("level_step", self.level_step, minimum=0.0)
        for name in ("bid_sizes", "ask_sizes"):
            sizes = getattr(self, name)
            if not isinstance(sizes, tuple):
                raise SettingError(name, f"{name} must be a tuple of sizes, got {sizes!r}")
            if len(sizes) > MAX_LEVELS_PER_SIDE:
                raise SettingError(name, f"{name}: at most {MAX_LEVELS_PER_SIDE} levels per side, got {len(sizes)}")
            for size in sizes:
                if isinstance(size, bool) or not isinstance(size, (int, float)) or not (size > 0 and math.isfinite(size)):
                    raise SettingError(name, f"{name} must hold positive finite sizes, got {sizes!r}")
        if not self.bid_sizes and not self.ask_sizes:
            raise SettingError("bid_sizes", "bid_sizes and ask_sizes are both empty: nothing to quote")
        # |target_position| <= the position limit is checked where both are known (the Quoter).
        _number("target_position", self.target_position)
        _number("price_skew", self.price_skew, minimum=0.0)
        _number("size_skew", self.size_skew, minimum=0.0)
        if self.size_skew > 1.0:
            raise SettingError("size_skew", f"size_skew must be at most 1, got {self.size_skew}")
        if not isinstance(self.post_only, bool):
            raise SettingError("post_only", f"post_only must be a bool, got {self.post_only!r}")
        _number("as_gamma", self.as_gamma, minimum=0.0, strict=True)
        _number("as_kappa", self.as_kappa, minimum=0.0, strict=True)
        _number("as_horizon_seconds", self.as_horizon_seconds, minimum=0.0)
        _number("as_inventory_lot", self.as_inventory_lot, minimum=0.0, strict=True)
        _number("volatility_half_life_seconds", self.volatility_half_life_seconds, minimum=0.0, strict=True)
        _number("min_interval_seconds", self.min_interval_seconds, minimum=0.0)


def _choice(name: str, value: object, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        raise SettingError(name, f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _number(name: str, value: object, minimum: float = -math.inf, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(name, f"{name} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = "greater than" if strict else "at least"
        raise SettingError(name, f"{name} must be {relation} {minimum:g}, got {value!r}")
