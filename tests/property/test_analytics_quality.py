"""Quote quality (app/analytics/quality.py) over random inputs: split_interval's pieces tile the
interval inside their windows, and for any ack sequence (times going backwards and missing
included) the intervals never overlap, add up to the time spanned, and give every minute an
uptime in [0, 1]. Worked examples: tests/unit/test_analytics_quality.py.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics.quality import QualityConfig, QualityWindow, RestingQuotes, split_interval
from models import examples

T0 = 1_747_578_840.0
finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=500, deadline=None)
@given(start=st.floats(min_value=1e9, max_value=2e9, **finite),
       duration=st.one_of(st.floats(min_value=-10.0, max_value=1e4, **finite),
                          st.integers(min_value=-2, max_value=300).map(float)),
       size=st.sampled_from([60.0, 1.0, 5.0, 3600.0]))  # whole seconds, as the windows are
def test_split_interval_tiles_the_interval_inside_its_windows(start, duration, size):
    end = start + duration
    pieces = split_interval(start, end, size)
    if end <= start:
        assert pieces == []
        return
    assert pieces
    windows = [w for w, _ in pieces]
    # Consecutive epoch-aligned windows, the first holding start and the last holding end.
    assert all(round(w / size) * size == w for w in windows)
    assert all(math.isclose(b - a, size, abs_tol=1e-6) for a, b in zip(windows, windows[1:]))
    assert windows[0] <= start < windows[0] + size
    assert windows[-1] < end <= windows[-1] + size
    # Each piece is the part of [start, end) inside its window; together they are the interval.
    for window, seconds in pieces:
        assert 0 < seconds <= size + 1e-6
        assert math.isclose(seconds, min(end, window + size) - max(start, window), abs_tol=1e-6)
    assert math.isclose(sum(s for _, s in pieces), end - start, rel_tol=1e-9, abs_tol=1e-6)


ORDER_IDS = ["B1", "B2", "A1", "A2"]


@st.composite
def acks(draw):
    """A random ack for one of four orders; its time is a step from the previous one (possibly back, possibly none)."""
    order_id = draw(st.sampled_from(ORDER_IDS))
    amount = draw(st.floats(min_value=0.001, max_value=2.0, **finite))
    remaining = draw(st.sampled_from([0.0, amount, amount / 2]))
    value = examples.example("ack")
    value.update(
        order_id=order_id, direction="buy" if order_id.startswith("B") else "sell",
        price=draw(st.one_of(st.none(), st.floats(min_value=99_000.0, max_value=101_000.0, **finite))),
        amount=amount, remaining_amount=remaining, filled_amount=amount - remaining, fills=[],
        status=draw(st.sampled_from(["open", "partially_filled", "cancelled", "cancelled_partially_filled", "filled"])),
        change_reason=draw(st.sampled_from(["insert", "amend", "cancel", "fill", "existing"])),
    )
    step = draw(st.one_of(st.none(), st.floats(min_value=-5.0, max_value=90.0, **finite)))
    return value, step


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(acks(), min_size=1, max_size=40),
       max_spread_bps=st.sampled_from([0.0, 10.0, 50.0, 1e6]))
def test_uptime_stays_in_the_unit_interval_and_the_intervals_tile_the_time_spanned(sequence, max_spread_bps):
    config = QualityConfig(max_spread_bps=max_spread_bps)
    book = RestingQuotes("BTC-PERPETUAL")
    windows: dict[float, QualityWindow] = {}
    clock = T0
    first_time = newest = None
    previous_end = None
    for value, step in sequence:
        if step is None:
            value["ack_received_at"] = None
        else:
            clock += step
            value["ack_received_at"] = datetime.fromtimestamp(clock, tz=timezone.utc)
        bid, ask = book.best_bid, book.best_ask
        effect = book.apply_ack(value, config)
        assert effect.quoted_amount >= 0
        if effect.interval is not None:
            start, end, two_sided = effect.interval
            assert start <= end
            # Judged on the book before the ack: two-sided needs both sides, and within the limit.
            if two_sided:
                assert bid is not None and ask is not None and (ask - bid) / ((ask + bid) / 2) * 1e4 <= max_spread_bps
            elif max_spread_bps == 1e6:  # no book here is that wide: only a missing side makes it one-sided
                assert bid is None or ask is None
            # Each interval starts where the last one ended: no second is counted twice.
            assert previous_end is None or start == previous_end
            previous_end = end
            for window, seconds in split_interval(start, end):
                windows.setdefault(window, QualityWindow("BTC-PERPETUAL", window)).add_interval(seconds, two_sided)
        stamp = value["ack_received_at"]
        if stamp is not None:
            first_time = stamp.timestamp() if first_time is None else first_time
            newest = stamp.timestamp() if newest is None else max(newest, stamp.timestamp())
    for window in windows.values():
        uptime = window.record()["uptime"]
        assert uptime is None or 0.0 <= uptime <= 1.0
        assert window.two_sided_seconds <= window.observed_seconds <= 60.0 + 1e-6
    observed = sum(w.observed_seconds for w in windows.values())
    spanned = 0.0 if first_time is None else newest - first_time
    assert math.isclose(observed, spanned, abs_tol=1e-6)
    # Whatever rests in the book is live, priced and on the side its id says.
    for order_id, order in book.orders.items():
        assert order.remaining > 0 and order.price is not None
        assert order.direction == ("buy" if order_id.startswith("B") else "sell")
