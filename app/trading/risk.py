"""Risk: which of the quoter's orders may go to the venue, and the trading state. Pure logic, no IO.

Contract
- ``RiskGate.filter(instrument, position, bids, asks, now, last_data_at, pnl)`` takes the
  desired ladder (best first, ``(price, amount)`` pairs) and returns ``(bids, asks,
  denials)``: the levels the order gateway may place, and one ``Denial`` (with a reason)
  for every level, or part of a level, it may not.
- Trading state, per call:
  - HALTED: nothing is placed (the gateway then cancels what rests). Three causes:
    the operator (``set_state``); the kill switch, PnL below −max_drawdown, which
    latches: it stays HALTED until the operator calls ``set_state`` (and trips again
    at the next call if the PnL is still below); stale market data, no data for
    ``stale_after_s`` seconds, which clears by itself as soon as data is fresh again.
  - REDUCING (operator): only the side that reduces the position, cumulatively sized
    to go no further than flat (the level that crosses flat is trimmed).
  - ACTIVE: every level, within the limits below.
- Limits, in this order: a level with a non-positive or non-finite price or amount is
  invalid; a level whose notional (price × amount, linear contracts) exceeds
  max_order_notional is dropped on its own; then, per side, best first, the first
  level at which the position would breach ±max_position if that side's kept levels
  all filled is dropped with every level after it; last, at most max_open_orders
  levels per instrument are kept, the best of both sides first (bid 0, ask 0, bid 1…).
- Denials are counted by reason (``denials``) and logged at most once per
  ``denial_log_interval_s`` per reason, timed by the ``now`` the caller passes.

Times are unix seconds (floats) or datetimes. ``pnl`` None means unknown: the kill
switch cannot judge it and leaves the state alone.
"""
from __future__ import annotations

import enum
import logging
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Sequence, Union

from app.config import SettingError, documented
from app.trading.ticks import round_size

log = logging.getLogger(__name__)

Level = tuple[float, float]
Moment = Union[float, datetime]

#: Float slack when adding up sizes: 0.2 + 0.4 + 0.4 must fit a limit of 1.0.
_EPSILON = 1e-9


@dataclass(frozen=True)
class RiskLimits:
    """The risk limits, with defaults (``metadata["doc"]`` says what each is).

    ``max_position`` is the one position limit: the quote core sizes its ladder against it
    (the quote agent hands it to the ``Quoter``), this gate drops the levels past it, and the
    order gateway's pre-trade check keeps the way there within it.
    """

    max_position: float = documented(1.0, "largest |position| per instrument, in contracts (BTC for BTC-PERPETUAL), counting all resting orders of a side as filled")
    max_order_notional: float = documented(100_000.0, "largest price × amount of one order, in the quote currency (USD)")
    max_open_orders: int = documented(10, "most orders per instrument, both sides together")
    max_drawdown: float = documented(10_000.0, "kill switch: PnL below minus this halts trading until the operator resumes it (USD)")
    stale_after_s: float = documented(5.0, "no market data for this long halts the instrument until data returns")
    denial_log_interval_s: float = documented(1.0, "log each denial reason at most this often")

    def __post_init__(self) -> None:
        for name in ("max_position", "max_order_notional", "max_drawdown", "stale_after_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise SettingError(name, f"risk {name} must be a number >= 0, got {value!r}")
        if not isinstance(self.max_open_orders, int) or self.max_open_orders < 0:
            raise SettingError("max_open_orders", f"risk max_open_orders must be an integer >= 0, got {self.max_open_orders!r}")


class TradingState(enum.Enum):
    ACTIVE = "active"
    REDUCING = "reducing"  # only orders that bring the position towards flat
    HALTED = "halted"  # cancel everything, quote nothing


_ACTIVE, _REDUCING, _HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


@dataclass(frozen=True)
class Denial:
    """A level (or the part of a level, for ``reducing_beyond_flat``) that may not be placed."""

    instrument: str
    side: str  # bid | ask
    level: int
    price: float
    amount: float
    reason: str  # a fixed key, counted in RiskGate.denials
    detail: str  # the numbers behind it, for people


def _allowed_whole(ladder: Sequence[Sequence[float]], room: float, max_notional: float) -> Optional[list[Level]]:
    """An ACTIVE side's ladder as ``filter`` keeps it when it keeps every level (valid, within
    the notional, the cumulative amount within ``room``); None when any level would be denied."""
    kept = []
    used = 0.0
    for price, amount in ladder:
        price, amount = float(price), float(amount)
        if not (math.isfinite(price) and math.isfinite(amount) and price > 0 and amount > 0):
            return None
        if price * amount > max_notional or amount > max(0.0, room - used) + _EPSILON:
            return None
        kept.append((price, amount))
        used += amount
    return kept


def _seconds(moment: Moment) -> float:
    return moment.timestamp() if isinstance(moment, datetime) else float(moment)


class RiskGate:
    """The risk check between the quote core and the order gateway."""

    def __init__(self, limits: RiskLimits = RiskLimits(), state: TradingState = TradingState.ACTIVE) -> None:
        #: Replace at run time to change a limit (frozen: one assignment changes it whole).
        self.limits = limits
        self.state = state
        self.state_reason = "start"
        #: Why the kill switch tripped, while it is latched.
        self.kill_switch: Optional[str] = None
        #: Denials so far, by reason.
        self.denials: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._stale: set[str] = set()

    def set_state(self, state: TradingState, reason: str) -> None:
        """The operator's decision; also releases a tripped kill switch."""
        if self.kill_switch is not None:
            log.warning("risk: kill switch released by the operator (%s); it tripped on %s", reason, self.kill_switch)
            self.kill_switch = None
        if state != self.state:
            log.warning("risk: trading state %s → %s: %s", self.state.value, state.value, reason)
        self.state = state
        self.state_reason = reason

    def evaluate(self, instrument: str, now: Moment, last_data_at: Optional[Moment],
                 pnl: Optional[float]) -> tuple[TradingState, str]:
        """The state for this instrument now, and why (``halted_*`` reasons name the cause)."""
        if pnl is not None and self.kill_switch is None and pnl < -self.limits.max_drawdown:
            self.kill_switch = f"pnl {pnl:.2f} below -{self.limits.max_drawdown:.2f}"
            log.error("risk: kill switch tripped: %s; trading halted until the operator resumes it",
                      self.kill_switch)
        stale = last_data_at is None or _seconds(now) - _seconds(last_data_at) > self.limits.stale_after_s
        if stale != (instrument in self._stale):
            if stale:
                self._stale.add(instrument)
                log.warning("risk: no market data for %s for over %.1f s: halted until it returns",
                            instrument, self.limits.stale_after_s)
            else:
                self._stale.discard(instrument)
                log.warning("risk: market data for %s is back: trading resumes", instrument)
        if self.state == _HALTED:
            return _HALTED, "halted_manual"
        if self.kill_switch is not None:
            return _HALTED, "halted_kill_switch"
        if stale:
            return _HALTED, "halted_stale_data"
        return self.state, self.state.value

    def filter(self, instrument: str, position: float, bids: Sequence[Sequence[float]],
               asks: Sequence[Sequence[float]], now: Moment, last_data_at: Optional[Moment],
               pnl: Optional[float], *, volume_tick: Optional[float] = None,
               ) -> tuple[list[Level], list[Level], list[Denial]]:
        """The ladder the gateway may place, and the denials. ``volume_tick``: round trimmed
        sizes down to it (REDUCING), so they stay valid order amounts."""
        limits = self.limits
        state, why = self.evaluate(instrument, now, last_data_at, pnl)
        # Most decisions deny nothing: checked first, without building the denials' bookkeeping.
        # The same rules as below, in the same order, so that what passes here passes there
        # (tests/property/test_risk.py holds the two equal).
        if state is _ACTIVE and len(bids) + len(asks) <= limits.max_open_orders:
            kept_bids = _allowed_whole(bids, limits.max_position - position, limits.max_order_notional)
            if kept_bids is not None:
                kept_asks = _allowed_whole(asks, limits.max_position + position, limits.max_order_notional)
                if kept_asks is not None:
                    return kept_bids, kept_asks, []
        return self._filter_with_denials(instrument, position, bids, asks, now, state, why, volume_tick)

    def _filter_with_denials(self, instrument: str, position: float, bids: Sequence[Sequence[float]],
                             asks: Sequence[Sequence[float]], now: Moment, state: TradingState, why: str,
                             volume_tick: Optional[float]) -> tuple[list[Level], list[Level], list[Denial]]:
        """``filter`` in full: every rule, each refusal a denial, counted and logged."""
        limits = self.limits
        denials: list[Denial] = []
        sides: dict[str, list[tuple[int, float, float]]] = {}
        for side, ladder in (("bid", bids), ("ask", asks)):
            kept = []
            for level, (price, amount) in enumerate(ladder):
                price, amount = float(price), float(amount)
                if state == _HALTED:
                    denials.append(Denial(instrument, side, level, price, amount, why, f"trading halted ({why})"))
                elif not (math.isfinite(price) and math.isfinite(amount) and price > 0 and amount > 0):
                    denials.append(Denial(instrument, side, level, price, amount, "invalid_level",
                                          f"price {price} and amount {amount} must be positive numbers"))
                elif price * amount > limits.max_order_notional:
                    denials.append(Denial(instrument, side, level, price, amount, "max_order_notional",
                                          f"notional {price * amount:.2f} > {limits.max_order_notional:.2f}"))
                else:
                    kept.append((level, price, amount))
            sides[side] = kept

        # Cumulative exposure per side: what the position becomes if all kept orders fill.
        for side, sign in (("bid", 1.0), ("ask", -1.0)):
            kept = []
            if state == _REDUCING:
                reduces = position != 0 and (position < 0) == (sign > 0)
                room = abs(position) if reduces else 0.0  # how far this side may go: to flat
                reason, bound = "reducing_beyond_flat", "flat"
                if not reduces:
                    reason = "reducing_increases_position"
            else:
                room = limits.max_position - sign * position  # distance to the limit on this side
                reason, bound = "max_position", f"±{limits.max_position}"
            used = 0.0
            for level, price, amount in sides[side]:
                allowed = max(0.0, room - used)
                if amount <= allowed + _EPSILON:
                    kept.append((level, price, amount))
                    used += amount
                    continue
                if state == _REDUCING and allowed > _EPSILON:
                    # The level that would cross flat is trimmed to end exactly at flat.
                    trimmed = round_size(allowed, volume_tick) if volume_tick else allowed
                    if trimmed > _EPSILON:
                        kept.append((level, price, trimmed))
                        used += trimmed
                        amount -= trimmed
                denials.append(Denial(instrument, side, level, price, amount, reason,
                                      f"position {position} {'+' if sign > 0 else '-'} {used + amount:.8g} "
                                      f"would pass {bound}"))
                used = room + 1.0  # past the bound: every deeper level is denied too
            sides[side] = kept

        # Open-order count: the best levels of both sides first.
        ranked = sorted([(level, 0, price, amount) for level, price, amount in sides["bid"]]
                        + [(level, 1, price, amount) for level, price, amount in sides["ask"]])
        out: dict[str, list[Level]] = {"bid": [], "ask": []}
        for rank, (level, side_index, price, amount) in enumerate(ranked):
            side = ("bid", "ask")[side_index]
            if rank < limits.max_open_orders:
                out[side].append((price, amount))
            else:
                denials.append(Denial(instrument, side, level, price, amount, "max_open_orders",
                                      f"more than {limits.max_open_orders} orders on {instrument}"))
        for denial in denials:
            self._count(denial, _seconds(now))
        return out["bid"], out["ask"], denials

    def _count(self, denial: Denial, now: float) -> None:
        self.denials[denial.reason] += 1
        last = self._logged_at.get(denial.reason)
        if last is None or now - last >= self.limits.denial_log_interval_s:
            self._logged_at[denial.reason] = now
            log.warning("risk denied %s %s level %d (%s x %s): %s [%s, %d so far]", denial.instrument, denial.side,
                        denial.level, denial.price, denial.amount, denial.detail, denial.reason,
                        self.denials[denial.reason])
