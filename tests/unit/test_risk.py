"""RiskGate (app/trading/risk.py): pure logic, no venue; cases by hand (state changes, the kill
switch, stale data, each limit, denial logging). Properties over random ladders:
tests/property/test_risk.py.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from app.trading.risk import RiskGate, RiskLimits, TradingState

BTC = "BTC-PERPETUAL"
NOW = 1_800_000_000.0
FRESH = NOW - 0.5  # market data half a second old
SLACK = 1e-9

#: Limits that only the rule under test can hit (the other limits are far away).
ROOMY = dict(max_order_notional=1e12, max_open_orders=1_000, max_drawdown=1e12, stale_after_s=5.0)


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
    with caplog.at_level(logging.WARNING, logger="app.trading.risk"):
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
