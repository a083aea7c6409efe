"""RiskGate (app/risk.py): pure logic, no venue. Properties with hypothesis, cases by hand.

Each property also checks that the gate keeps what it may keep (nothing more denied
than the rule requires), so a gate that simply denied everything would fail too.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from app.risk import RiskGate, RiskLimits, TradingState

BTC = "BTC-PERPETUAL"
NOW = 1_800_000_000.0
FRESH = NOW - 0.5  # market data half a second old
SLACK = 1e-9

#: Limits that only the rule under test can hit (the other limits are far away).
ROOMY = dict(max_order_notional=1e12, max_open_orders=1_000, max_drawdown=1e12, stale_after_s=5.0)

sizes = st.integers(min_value=1, max_value=1000).map(lambda units: units / 1000)  # 0.001 … 1.0 BTC
ladders = st.lists(st.tuples(st.integers(90_000, 110_000).map(float), sizes), max_size=6)
positions = st.integers(min_value=-3000, max_value=3000).map(lambda units: units / 1000)


def total(levels) -> float:
    return sum(amount for _price, amount in levels)


def prefix_within(ladder, room: float) -> float:
    """How much of a ladder, best first, fits in ``room`` without splitting a level."""
    used = 0.0
    for _price, amount in ladder:
        if used + amount > room + SLACK:
            break
        used += amount
    return used


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


def test_reducing_trims_the_level_that_crosses_flat():
    gate = RiskGate(RiskLimits(**ROOMY), TradingState.REDUCING)
    bids, asks, denials = gate.filter(BTC, 0.5, [(99_900.0, 0.2)], [(100_100.0, 0.2), (100_105.0, 0.4),
                                                                     (100_110.0, 0.4)], NOW, FRESH, 0.0)
    assert bids == []
    assert asks == [(100_100.0, 0.2), (100_105.0, pytest.approx(0.3))]
    assert [(d.side, d.level, d.reason) for d in denials] == [
        ("bid", 0, "reducing_increases_position"), ("ask", 1, "reducing_beyond_flat"),
        ("ask", 2, "reducing_beyond_flat")]
    assert denials[1].amount == pytest.approx(0.1)  # the part of level 1 that would pass flat


@settings(max_examples=100, deadline=None)
@given(position=positions, bids=ladders, asks=ladders)
def test_halted_places_nothing(position, bids, asks):
    gate = RiskGate(RiskLimits(**ROOMY), TradingState.HALTED)
    kept_bids, kept_asks, denials = gate.filter(BTC, position, bids, asks, NOW, FRESH, 0.0)
    assert kept_bids == [] and kept_asks == []
    assert len(denials) == len(bids) + len(asks)
    assert {d.reason for d in denials} <= {"halted_manual"}


def test_active_passes_a_ladder_within_every_limit():
    gate = RiskGate(RiskLimits(max_position=1.0, **ROOMY))
    ladder_bids, ladder_asks = [(99_900.0, 0.2), (99_895.0, 0.4)], [(100_100.0, 0.2), (100_105.0, 0.4)]
    assert gate.filter(BTC, 0.0, ladder_bids, ladder_asks, NOW, FRESH, 0.0) == (ladder_bids, ladder_asks, [])
    assert gate.denials == {}


def test_kill_switch_latches_until_the_operator_resumes():
    gate = RiskGate(RiskLimits(max_drawdown=1_000.0, max_position=1.0, stale_after_s=5.0))
    ladder = [(99_900.0, 0.1)]
    assert gate.filter(BTC, 0.0, ladder, ladder, NOW, FRESH, -999.0)[0] == ladder  # not yet
    bids, asks, denials = gate.filter(BTC, 0.0, ladder, ladder, NOW, FRESH, -1_000.01)
    assert (bids, asks) == ([], []) and {d.reason for d in denials} == {"halted_kill_switch"}
    assert gate.kill_switch is not None
    # The PnL recovering does not resume trading: the switch is latched.
    assert gate.evaluate(BTC, NOW + 1, NOW + 1, 500.0) == (TradingState.HALTED, "halted_kill_switch")
    assert gate.filter(BTC, 0.0, ladder, ladder, NOW + 1, NOW + 1, 500.0)[0] == []
    gate.set_state(TradingState.ACTIVE, "loss reviewed")
    assert gate.kill_switch is None
    assert gate.filter(BTC, 0.0, ladder, ladder, NOW + 2, NOW + 2, 500.0)[0] == ladder
    gate.set_state(TradingState.ACTIVE, "resume while still below")  # trips again at once
    assert gate.evaluate(BTC, NOW + 3, NOW + 3, -2_000.0)[0] == TradingState.HALTED


def test_stale_data_halts_and_recovers_by_itself():
    gate = RiskGate(RiskLimits(stale_after_s=2.0))
    ladder = [(99_900.0, 0.1)]
    assert gate.filter(BTC, 0.0, ladder, ladder, NOW, None, 0.0)[0] == []  # no data yet
    assert gate.evaluate(BTC, NOW, NOW - 2.0, 0.0) == (TradingState.ACTIVE, "active")  # exactly at the limit
    bids, _asks, denials = gate.filter(BTC, 0.0, ladder, ladder, NOW, NOW - 2.5, 0.0)
    assert bids == [] and {d.reason for d in denials} == {"halted_stale_data"}
    assert gate.filter(BTC, 0.0, ladder, ladder, NOW, NOW - 0.1, 0.0)[0] == ladder  # data back: active again
    # Datetimes work as well as unix seconds; staleness is per instrument.
    now = datetime.fromtimestamp(NOW, timezone.utc)
    assert gate.evaluate("ETH-PERPETUAL", now, now - timedelta(seconds=3), 0.0)[0] == TradingState.HALTED
    assert gate.evaluate(BTC, now, now - timedelta(seconds=1), 0.0)[0] == TradingState.ACTIVE
    # A manual REDUCING survives a stale spell: it comes back as REDUCING, not ACTIVE.
    gate.set_state(TradingState.REDUCING, "unwind")
    assert gate.evaluate(BTC, NOW, NOW - 10, 0.0)[0] == TradingState.HALTED
    assert gate.evaluate(BTC, NOW, NOW, 0.0)[0] == TradingState.REDUCING


def test_order_notional_drops_only_the_level_over_it():
    gate = RiskGate(RiskLimits(max_order_notional=30_000.0, max_position=10.0, max_open_orders=100))
    bids, asks, denials = gate.filter(BTC, 0.0, [(100_000.0, 0.2), (99_990.0, 0.4), (99_980.0, 0.1)], [],
                                      NOW, FRESH, 0.0)
    assert bids == [(100_000.0, 0.2), (99_980.0, 0.1)]
    assert [(d.level, d.reason) for d in denials] == [(1, "max_order_notional")]


def test_open_orders_keep_the_best_levels_of_both_sides():
    gate = RiskGate(RiskLimits(max_open_orders=3, max_position=10.0))
    ladder_bids, ladder_asks = [(99_900.0, 0.2), (99_895.0, 0.4)], [(100_100.0, 0.2), (100_105.0, 0.4)]
    bids, asks, denials = gate.filter(BTC, 0.0, ladder_bids, ladder_asks, NOW, FRESH, 0.0)
    assert bids == ladder_bids and asks == ladder_asks[:1]
    assert [(d.side, d.level, d.reason) for d in denials] == [("ask", 1, "max_open_orders")]


def test_invalid_levels_are_denied():
    gate = RiskGate(RiskLimits(max_position=10.0))
    bids, _asks, denials = gate.filter(BTC, 0.0, [(99_900.0, 0.0), (float("nan"), 0.1), (-1.0, 0.1),
                                                  (99_890.0, 0.1)], [], NOW, FRESH, 0.0)
    assert bids == [(99_890.0, 0.1)] and [d.reason for d in denials] == ["invalid_level"] * 3


def test_denials_are_counted_by_reason_and_logged_at_most_once_a_second(caplog):
    gate = RiskGate(RiskLimits(max_position=0.3, max_open_orders=100, max_order_notional=1e9))
    ladder = [(99_900.0, 0.2), (99_895.0, 0.4), (99_890.0, 0.4)]
    with caplog.at_level(logging.WARNING, logger="app.risk"):
        for i in range(5):  # five ticks within half a second: two bid levels over the limit each time
            gate.filter(BTC, 0.0, ladder, [], NOW + i * 0.1, NOW + i * 0.1, 0.0)
        gate.set_state(TradingState.HALTED, "operator")
        gate.filter(BTC, 0.0, ladder, ladder, NOW + 0.6, NOW + 0.6, 0.0)
        gate.filter(BTC, 0.0, ladder, [], NOW + 1.7, NOW + 1.7, 0.0)  # more than a second after its first log
    assert gate.denials == {"max_position": 10, "halted_manual": 9}
    denial_logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("risk denied")]
    assert sum("[max_position" in m for m in denial_logs) == 1
    assert sum("[halted_manual" in m for m in denial_logs) == 2  # at 0.6 s and again at 1.7 s


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_position"):
        RiskLimits(max_position=-1.0)
    with pytest.raises(ValueError, match="max_open_orders"):
        RiskLimits(max_open_orders=2.5)  # type: ignore[arg-type]
