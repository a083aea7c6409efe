"""RiskGate (app/trading/risk.py) over random positions and ladders: the kept ladder never takes
the position past the limit, REDUCING never flips the position, HALTED places nothing; each
property also checks that no more is denied than the rule requires. Cases by hand:
tests/unit/test_risk.py.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.trading.risk import RiskGate, RiskLimits, TradingState
from tests.unit.test_risk import BTC, FRESH, NOW, ROOMY, SLACK

sizes = st.integers(min_value=1, max_value=1000).map(lambda units: units / 1000)  # 0.001 … 1.0 BTC


ladders = st.lists(st.tuples(st.integers(90_000, 110_000).map(float), sizes), max_size=6)


positions = st.integers(min_value=-3000, max_value=3000).map(lambda units: units / 1000)


def prefix_within(ladder, room: float) -> float:
    """How much of a ladder, best first, fits in ``room`` without splitting a level."""
    used = 0.0
    for _price, amount in ladder:
        if used + amount > room + SLACK:
            break
        used += amount
    return used


def total(levels) -> float:
    return sum(amount for _price, amount in levels)


@settings(max_examples=300, deadline=None)
@given(position=positions, bids=ladders, asks=ladders,
       limit=st.integers(min_value=0, max_value=2000).map(lambda units: units / 1000))
def test_the_cumulative_ladder_never_takes_the_position_past_the_limit(position, bids, asks, limit):
    gate = RiskGate(RiskLimits(max_position=limit, **ROOMY))
    kept_bids, kept_asks, denials = gate.filter(BTC, position, bids, asks, NOW, FRESH, 0.0)
    # Every order of a side filling must leave the position within ±limit ...
    assert position + total(kept_bids) <= max(limit, position) + SLACK
    assert position - total(kept_asks) >= min(-limit, position) - SLACK
    # ... what is kept is the best levels, in order (a prefix of each ladder) ...
    assert kept_bids == bids[:len(kept_bids)] and kept_asks == asks[:len(kept_asks)]
    # ... as much of it as fits, and every level not kept has a denial.
    assert total(kept_bids) == pytest.approx(prefix_within(bids, max(0.0, limit - position)), abs=SLACK)
    assert total(kept_asks) == pytest.approx(prefix_within(asks, max(0.0, limit + position)), abs=SLACK)
    assert len(denials) == len(bids) + len(asks) - len(kept_bids) - len(kept_asks)
    assert all(d.reason == "max_position" for d in denials)


@settings(max_examples=300, deadline=None)
@given(position=positions, bids=ladders, asks=ladders)
def test_reducing_keeps_only_the_reducing_side_and_never_flips_the_position(position, bids, asks):
    gate = RiskGate(RiskLimits(max_position=10.0, **ROOMY), TradingState.REDUCING)
    kept_bids, kept_asks, denials = gate.filter(BTC, position, bids, asks, NOW, FRESH, 0.0, volume_tick=0.001)
    if position > 0:
        assert kept_bids == []
        assert position - total(kept_asks) >= -SLACK  # at worst flat, never short
        # As much as the ladder offers, up to flat (the level crossing flat is trimmed).
        assert total(kept_asks) == pytest.approx(min(position, total(asks)), abs=1e-6)
    elif position < 0:
        assert kept_asks == []
        assert position + total(kept_bids) <= SLACK
        assert total(kept_bids) == pytest.approx(min(-position, total(bids)), abs=1e-6)
    else:
        assert kept_bids == [] and kept_asks == []  # flat: no side reduces anything
    for _price, amount in kept_bids + kept_asks:
        assert amount > 0 and math.isclose(amount * 1000, round(amount * 1000), abs_tol=1e-6)  # on the volume tick
    wrong_side = asks if position < 0 else bids if position > 0 else bids + asks
    assert sum(d.reason == "reducing_increases_position" for d in denials) == len(wrong_side)


@settings(max_examples=100, deadline=None)
@given(position=positions, bids=ladders, asks=ladders)
def test_halted_places_nothing(position, bids, asks):
    gate = RiskGate(RiskLimits(**ROOMY), TradingState.HALTED)
    kept_bids, kept_asks, denials = gate.filter(BTC, position, bids, asks, NOW, FRESH, 0.0)
    assert kept_bids == [] and kept_asks == []
    assert len(denials) == len(bids) + len(asks)
    assert {d.reason for d in denials} <= {"halted_manual"}


# Prices, amounts and limits that reach every rule: bad levels, notionals over the limit,
# position limits that cut a ladder, open-order counts that cut both. Good levels are drawn
# most often and the limits are near the ladders' sizes, so that many ladders pass whole (the
# quick check's answer) and many fail it by one rule.
any_levels = st.lists(st.tuples(st.sampled_from([90_000.0] * 4 + [100_000.0] * 4 + [0.0, -1.0, math.nan, math.inf]),
                                st.sampled_from([0.25, 0.5, 1.0] * 4 + [0.0, math.nan])), max_size=4)


@settings(max_examples=500, deadline=None)
@given(position=st.sampled_from([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5]), bids=any_levels, asks=any_levels,
       limit=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]), notional=st.sampled_from([60_000.0, 1e9, 1e9]),
       max_open=st.integers(min_value=0, max_value=8),
       state=st.sampled_from([TradingState.ACTIVE] * 3 + [TradingState.REDUCING, TradingState.HALTED]))
def test_the_quick_check_of_a_ladder_nothing_is_denied_in_agrees_with_the_full_rules(
        position, bids, asks, limit, notional, max_open, state):
    limits = RiskLimits(max_position=limit, max_order_notional=notional, max_open_orders=max_open,
                        max_drawdown=1e9, stale_after_s=60.0)
    quick, full = RiskGate(limits, state), RiskGate(limits, state)
    kept_bids, kept_asks, denials = quick.filter(BTC, position, bids, asks, NOW, FRESH, 0.0, volume_tick=0.001)
    why = full.evaluate(BTC, NOW, FRESH, 0.0)[1]
    expected = full._filter_with_denials(BTC, position, bids, asks, NOW, state, why, 0.001)
    assert (kept_bids, kept_asks) == expected[:2]
    assert [(d.side, d.level, d.reason) for d in denials] == [(d.side, d.level, d.reason) for d in expected[2]]
    assert quick.denials == full.denials
