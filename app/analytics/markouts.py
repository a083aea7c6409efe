"""Markouts of our fills: how the fair value moved 1, 5, 30 and 60 seconds after each one.

Fair value comes from ticker records only: they share the partition's order, so the
history is the same however fills interleave with it. Per ticker, the mid is
``(best_bid_price + best_ask_price) / 2`` when both are set and the mark is ``mark_price``,
both at ``mark_timestamp``.

The history keeps at most one point per 100 ms slot (the last ticker of the slot, with its
own time) and covers ``HISTORY_SECONDS`` behind the newest time seen. The fair value at
time T is the last history point with time <= T. Because a slot's point is replaced until
the slot is over, that answer is final only once a ticker *later* than T has arrived: a
horizon resolves then, and a fill that arrives after its horizons have passed resolves them
at once from the history, with the same result. So the markouts do not depend on how fills
and tickers interleave, as long as a fill arrives less than ``HISTORY_SECONDS - 60`` seconds
behind the tickers. A horizon whose fair value has already left the history (or that precedes
every ticker) is counted as late, never guessed.

A markout is positive when the fill was good for us: a buy earns ``fv - price``, a sell
``price - fv``; in basis points that over the price, in quote currency that times the amount.
Tickers older than the newest one held are ignored: the history only moves forward.

State: ``schemas/markout_book/v1.avsc``; records: ``schemas/markout/v1.avsc``
(docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once).
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

#: Seconds after a fill at which its markout is taken.
HORIZONS = (1, 5, 30, 60)
#: How far behind the newest ticker the fair-value history reaches.
HISTORY_SECONDS = 90.0
#: Width of a history slot: at most one point per slot is kept.
SLOT_SECONDS = 0.1
SIDES = ("buy", "sell")

_isfinite = math.isfinite
_floor = math.floor


def _finite(name: str, value: Any) -> float:
    if value is None or not _isfinite(value):
        raise ValueError(f"{name} is not a finite number: {value!r}")
    return value


@dataclass(slots=True)
class MarkoutTotals:
    """Sums of the resolved markouts of one side and horizon: mid-based (only the fills whose
    fair value had a mid) and mark-based (all)."""

    count: int = 0
    sum_markout_bps: float = 0.0
    sum_markout: float = 0.0
    count_mark: int = 0
    sum_markout_bps_mark: float = 0.0
    sum_markout_mark: float = 0.0


@dataclass(slots=True)
class PendingFill:
    """A fill with horizons still to resolve (ascending)."""

    trade_id: str
    order_id: str
    direction: str
    maker_taker: str
    price: float
    amount: float
    time: float
    horizons: list[int]


def _empty_totals() -> dict[tuple[str, int], MarkoutTotals]:
    return {(side, h): MarkoutTotals() for side in SIDES for h in HORIZONS}


@dataclass(slots=True)
class MarkoutBook:
    """Fair-value history, pending fills and markout totals of one instrument."""

    instrument_name: str
    #: Fair-value history, parallel lists, time ascending: mid may be None, mark is not.
    times: list[float] = field(default_factory=list)
    mids: list[Optional[float]] = field(default_factory=list)
    marks: list[float] = field(default_factory=list)
    #: Fills waiting for a horizon, in arrival order.
    pending: list[PendingFill] = field(default_factory=list)
    #: (direction, horizon seconds) -> totals.
    totals: dict[tuple[str, int], MarkoutTotals] = field(default_factory=_empty_totals)
    #: Fill horizons whose fair value had left the history (or preceded every ticker).
    late: int = 0
    #: Last Kafka offset applied per source record name; carried, not interpreted here.
    offsets: dict[str, int] = field(default_factory=dict)
    # The earliest pending horizon time (fill time + horizon), None without pending fills:
    # a ticker not later than it resolves nothing, which keeps add_fair_value cheap.
    _next_due: Optional[float] = field(default=None, compare=False, repr=False)

    def add_fair_value(self, ticker: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply a ticker; the markout records of the horizons it resolves (resolution time, then
        horizon, then trade id order)."""
        t = _finite("mark_timestamp", ticker["mark_timestamp"])
        mark = _finite("mark_price", ticker["mark_price"])
        bid, ask = ticker["best_bid_price"], ticker["best_ask_price"]
        if bid is not None and ask is not None:
            mid: Optional[float] = (_finite("best_bid_price", bid) + _finite("best_ask_price", ask)) / 2
        else:
            mid = None
        times = self.times
        if times:
            newest = times[-1]
            if t < newest:
                return []
            if _floor(t / SLOT_SECONDS) == _floor(newest / SLOT_SECONDS):
                times[-1], self.mids[-1], self.marks[-1] = t, mid, mark
            else:
                times.append(t)
                self.mids.append(mid)
                self.marks.append(mark)
        else:
            times.append(t)
            self.mids.append(mid)
            self.marks.append(mark)
        # Resolve before pruning: a pending horizon in a gap of the tickers needs the point
        # before the gap, which may be older than the history's reach.
        resolved = self._resolve_pending(t) if self._next_due is not None and t > self._next_due else []
        self._prune(t)
        return resolved

    def add_fill(self, fill: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply one of our fills; the markout records of its horizons that have already passed
        (ValueError without a finite time, price or amount)."""
        time = _finite("time", fill["time"])
        pending = PendingFill(
            trade_id=fill["trade_id"], order_id=fill["order_id"], direction=fill["direction"],
            maker_taker=fill["maker_taker"], price=_finite("price", fill["price"]),
            amount=_finite("amount", fill["amount"]), time=time, horizons=[],
        )
        if pending.direction not in SIDES:
            raise ValueError(f"direction is not buy or sell: {pending.direction!r}")
        newest = self.times[-1] if self.times else None
        out = []
        for h in HORIZONS:
            due = time + h
            if newest is not None and newest > due:
                record = self._resolve(pending, h, due)
                if record is not None:
                    out.append(record)
            else:
                pending.horizons.append(h)
        if pending.horizons:
            self.pending.append(pending)
            first = time + pending.horizons[0]
            if self._next_due is None or first < self._next_due:
                self._next_due = first
        return out

    @property
    def pending_count(self) -> int:
        """Fill horizons not resolved yet."""
        return sum(len(p.horizons) for p in self.pending)

    def aggregates(self) -> dict[str, Any]:
        """For the web view: per side and horizon (seconds, as a string), the number of
        markouts, their mean in bps and their sum in quote currency, mid- and mark-based;
        plus the late and pending horizon counts."""
        view: dict[str, Any] = {}
        for side in SIDES:
            view[side] = {}
            for h in HORIZONS:
                s = self.totals[(side, h)]
                view[side][str(h)] = {
                    "count": s.count,
                    "markout_bps": s.sum_markout_bps / s.count if s.count else None,
                    "markout": s.sum_markout,
                    "count_mark": s.count_mark,
                    "markout_bps_mark": s.sum_markout_bps_mark / s.count_mark if s.count_mark else None,
                    "markout_mark": s.sum_markout_mark,
                }
        view["late"] = self.late
        view["pending"] = self.pending_count
        return view

    def _resolve_pending(self, now: float) -> list[dict[str, Any]]:
        due_now: list[tuple[float, int, str, PendingFill]] = []
        still: list[PendingFill] = []
        next_due: Optional[float] = None
        for p in self.pending:
            # Horizons ascend: when the first is not due, none is (most pending fills).
            if p.horizons and (first := p.time + p.horizons[0]) >= now:
                still.append(p)
                if next_due is None or first < next_due:
                    next_due = first
                continue
            keep = []
            for h in p.horizons:
                due = p.time + h
                if due < now:
                    due_now.append((due, h, p.trade_id, p))
                else:
                    keep.append(h)
                    if next_due is None or due < next_due:
                        next_due = due
            if keep:
                p.horizons = keep
                still.append(p)
        self.pending = still
        self._next_due = next_due
        due_now.sort(key=lambda item: item[:3])
        out = []
        for due, h, _, p in due_now:
            record = self._resolve(p, h, due)
            if record is not None:
                out.append(record)
        return out

    def _resolve(self, p: PendingFill, horizon: int, due: float) -> Optional[dict[str, Any]]:
        """The markout of ``p`` at ``horizon``, added to the totals; None (counted late) when
        the history holds no point at or before ``due``."""
        i = bisect_right(self.times, due) - 1
        if i < 0:
            self.late += 1
            return None
        mid, mark = self.mids[i], self.marks[i]
        side = 1.0 if p.direction == "buy" else -1.0
        totals = self.totals[(p.direction, horizon)]
        edge_mark = side * (mark - p.price)
        bps_mark = edge_mark / p.price * 1e4
        quote_mark = edge_mark * p.amount
        totals.count_mark += 1
        totals.sum_markout_bps_mark += bps_mark
        totals.sum_markout_mark += quote_mark
        if mid is not None:
            edge = side * (mid - p.price)
            bps: Optional[float] = edge / p.price * 1e4
            quote: Optional[float] = edge * p.amount
            totals.count += 1
            totals.sum_markout_bps += bps
            totals.sum_markout += quote
        else:
            bps = quote = None
        return {
            "trade_id": p.trade_id, "order_id": p.order_id, "instrument_name": self.instrument_name,
            "direction": p.direction, "maker_taker": p.maker_taker, "price": p.price, "amount": p.amount,
            "time": p.time, "horizon_seconds": horizon, "mid_after": mid, "mark_after": mark,
            "markout_bps": bps, "markout": quote, "markout_bps_mark": bps_mark, "markout_mark": quote_mark,
        }

    def _prune(self, newest: float) -> None:
        # Keep the last point at or before the reach too: it is the fair value just after it.
        times = self.times
        reach = newest - HISTORY_SECONDS
        if len(times) < 2 or times[1] > reach:
            return
        drop = bisect_right(times, reach) - 1
        if drop > 0:
            del times[:drop], self.mids[:drop], self.marks[:drop]

    def to_record(self) -> dict[str, Any]:
        """The ``markout_book`` record."""
        return {
            "instrument_name": self.instrument_name,
            "history_times": list(self.times),
            "history_mids": list(self.mids),
            "history_marks": list(self.marks),
            "pending": [
                {"trade_id": p.trade_id, "order_id": p.order_id, "direction": p.direction,
                 "maker_taker": p.maker_taker, "price": p.price, "amount": p.amount, "time": p.time,
                 "horizons": list(p.horizons)}
                for p in self.pending
            ],
            "totals": [
                {"direction": side, "horizon_seconds": h, "count": s.count, "sum_markout_bps": s.sum_markout_bps,
                 "sum_markout": s.sum_markout, "count_mark": s.count_mark,
                 "sum_markout_bps_mark": s.sum_markout_bps_mark, "sum_markout_mark": s.sum_markout_mark}
                for (side, h), s in self.totals.items()
            ],
            "late": self.late,
            "offsets": dict(self.offsets),
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> MarkoutBook:
        """The book a ``markout_book`` record describes."""
        totals = _empty_totals()
        for t in d["totals"]:
            totals[(t["direction"], t["horizon_seconds"])] = MarkoutTotals(
                count=t["count"], sum_markout_bps=t["sum_markout_bps"], sum_markout=t["sum_markout"],
                count_mark=t["count_mark"], sum_markout_bps_mark=t["sum_markout_bps_mark"],
                sum_markout_mark=t["sum_markout_mark"])
        pending = [PendingFill(trade_id=p["trade_id"], order_id=p["order_id"], direction=p["direction"],
                               maker_taker=p["maker_taker"], price=p["price"], amount=p["amount"],
                               time=p["time"], horizons=list(p["horizons"]))
                   for p in d["pending"]]
        dues = [p.time + p.horizons[0] for p in pending if p.horizons]
        return cls(
            instrument_name=d["instrument_name"], times=list(d["history_times"]), mids=list(d["history_mids"]),
            marks=list(d["history_marks"]), pending=pending, totals=totals, late=d["late"],
            offsets=dict(d.get("offsets") or {}), _next_due=min(dues) if dues else None,
        )
