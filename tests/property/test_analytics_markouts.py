"""Markouts (app/analytics/markouts.py) over random tickers and fills: the result does not
depend on how the fills interleave with the tickers, as long as each fill arrives less than
HISTORY_SECONDS - 60 s behind them, and equals the markouts a plain reading of the rules
gives (fair value at T: the last ticker at or before T, one per 100 ms slot; a horizon
resolved by the first ticker later than T). Examples: tests/unit/test_analytics_markouts.py.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.analytics.markouts import HISTORY_SECONDS, HORIZONS, SLOT_SECONDS, MarkoutBook
from models.examples import example

T0 = 1_700_000_000.0
LATENESS = HISTORY_SECONDS - max(HORIZONS)
TICKER = example("ticker")
FILL = example("fill")

# Milliseconds from one ticker to the next: bursts inside a slot, the usual few hundred ms,
# gaps of seconds, and now and then one that goes back in time (an older ticker is ignored).
ticker_gaps = st.one_of(st.integers(0, 40), st.integers(0, 700), st.integers(1000, 20_000), st.integers(-300, -1))


@st.composite
def tickers(draw) -> list[dict[str, Any]]:
    out, ms = [], 0
    for _ in range(draw(st.integers(1, 60))):
        ms = max(0, ms + draw(ticker_gaps))
        mark = draw(st.integers(90_000, 110_000)) / 2
        spread = draw(st.integers(1, 20)) / 2
        # Mostly both sides; sometimes one or none (no mid then).
        has_bid, has_ask = draw(st.integers(0, 4)) > 0, draw(st.integers(0, 4)) > 0
        out.append(dict(TICKER, mark_timestamp=T0 + ms / 1000, mark_price=mark,
                        best_bid_price=mark - spread if has_bid else None,
                        best_ask_price=mark + spread if has_ask else None))
    return out


@st.composite
def scenarios(draw):
    """Tickers, fills and an arrival position per fill that keeps within the allowed lateness."""
    ts = draw(tickers())
    last = max(t["mark_timestamp"] for t in ts)
    fills, positions = [], []
    for k in range(draw(st.integers(1, 12))):
        time = T0 + draw(st.integers(-2000, int((last - T0) * 1000) + 2000)) / 1000
        fills.append(dict(FILL, trade_id=f"t{k}", order_id=f"o{k}", direction=draw(st.sampled_from(["buy", "sell"])),
                          maker_taker=draw(st.sampled_from(["maker", "taker"])),
                          price=draw(st.integers(90_000, 110_000)) / 2, amount=draw(st.integers(1, 1000)) / 1000,
                          time=time))
        # Insert before ticker p: the newest ticker seen then is the newest of ts[:p].
        allowed = [p for p in range(len(ts) + 1)
                   if p == 0 or max(t["mark_timestamp"] for t in ts[:p]) - time < LATENESS]
        positions.append(draw(st.sampled_from(allowed)))
    return ts, fills, positions


def run(ts: list[dict], fills: list[dict], positions: list[int], order: list[int]) -> tuple[MarkoutBook, list[dict]]:
    """Feed the fills at their positions (same position: in ``order``) between the tickers."""
    book, out = MarkoutBook("BTC-PERPETUAL"), []
    at: dict[int, list[int]] = {}
    for k in order:
        at.setdefault(positions[k], []).append(k)
    for p in range(len(ts) + 1):
        for k in at.get(p, []):
            out += book.add_fill(fills[k])
        if p < len(ts):
            out += book.add_fair_value(ts[p])
    return book, out


def key(r: dict) -> tuple:
    return r["trade_id"], r["horizon_seconds"]


def expected(ts: list[dict], fills: list[dict]) -> tuple[list[dict], int, int]:
    """The markout records, late count and pending count by the rules, in plain Python."""
    history: list[tuple[float, Optional[float], float]] = []
    for t in ts:
        time = t["mark_timestamp"]
        if history and time < history[-1][0]:
            continue
        bid, ask = t["best_bid_price"], t["best_ask_price"]
        point = (time, (bid + ask) / 2 if bid is not None and ask is not None else None, t["mark_price"])
        if history and math.floor(time / SLOT_SECONDS) == math.floor(history[-1][0] / SLOT_SECONDS):
            history[-1] = point
        else:
            history.append(point)
    newest = history[-1][0]
    records, late, pending = [], 0, 0
    for f in fills:
        for h in HORIZONS:
            due = f["time"] + h
            if not newest > due:
                pending += 1
                continue
            before = [p for p in history if p[0] <= due]
            if not before:
                late += 1
                continue
            _, mid, mark = before[-1]
            side = 1 if f["direction"] == "buy" else -1
            records.append({"trade_id": f["trade_id"], "horizon_seconds": h, "mid_after": mid, "mark_after": mark,
                            "markout_mark": side * (mark - f["price"]) * f["amount"]})
    return sorted(records, key=key), late, pending


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_markouts_do_not_depend_on_the_interleaving(scenario, rnd):
    ts, fills, positions = scenario
    order = list(range(len(fills)))
    rnd.shuffle(order)
    book, out = run(ts, fills, positions, order)
    # The reference interleaving: every fill before every ticker.
    first, first_out = run(ts, fills, [0] * len(fills), list(range(len(fills))))

    assert sorted(out, key=key) == sorted(first_out, key=key)
    assert len({key(r) for r in out}) == len(out)
    assert (book.late, book.pending_count, book.times, book.mids, book.marks) == \
        (first.late, first.pending_count, first.times, first.mids, first.marks)
    assert sorted(p.trade_id for p in book.pending) == sorted(p.trade_id for p in first.pending)
    for side_horizon, totals in book.totals.items():
        other = first.totals[side_horizon]
        assert (totals.count, totals.count_mark) == (other.count, other.count_mark)
        assert totals.sum_markout_bps_mark == pytest.approx(other.sum_markout_bps_mark, abs=1e-6)
        assert totals.sum_markout == pytest.approx(other.sum_markout, abs=1e-9)

    records, late, pending = expected(ts, fills)
    assert [{k: r[k] for k in ("trade_id", "horizon_seconds", "mid_after", "mark_after")}
            for r in sorted(out, key=key)] == [{k: r[k] for k in ("trade_id", "horizon_seconds", "mid_after",
                                                                 "mark_after")} for r in records]
    assert [r["markout_mark"] for r in sorted(out, key=key)] == pytest.approx([r["markout_mark"] for r in records])
    assert (book.late, book.pending_count) == (late, pending)
    assert len(out) + late + pending == len(fills) * len(HORIZONS)
