"""PositionKeeper (app/trading/position.py): the portfolio at session open plus the fills, and the fills' PnL."""
from __future__ import annotations

import math

import pytest

from app.trading.position import PositionKeeper

BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"


def test_an_unknown_instrument_is_flat_and_has_no_pnl_yet():
    keeper = PositionKeeper()
    assert keeper.position(BTC) == 0.0
    assert keeper.pnl(BTC, 100_000.0) == 0.0


def test_the_portfolio_replaces_every_position():
    keeper = PositionKeeper()
    keeper.reset_from_portfolio([{"instrument_name": BTC, "position": 0.3}, {"instrument_name": ETH, "position": -2}])
    assert (keeper.position(BTC), keeper.position(ETH)) == (0.3, -2.0)
    assert isinstance(keeper.position(ETH), float)
    # An instrument the next read does not list is flat; entries without a numeric position are skipped.
    keeper.reset_from_portfolio([{"instrument_name": ETH, "position": 1.5}, {"instrument_name": BTC, "position": None},
                                 "not an entry"])
    assert (keeper.position(BTC), keeper.position(ETH)) == (0.0, 1.5)
    keeper.reset_from_portfolio({"error": "not a list"})
    assert keeper.position(ETH) == 0.0


def test_fills_move_the_position_buy_up_sell_down():
    keeper = PositionKeeper()
    keeper.reset_from_portfolio([{"instrument_name": BTC, "position": 0.5}])
    keeper.add_fill(BTC, "buy", 0.2, 100_000.0)
    keeper.add_fill(BTC, "sell", 0.05, 100_010.0)
    assert keeper.position(BTC) == pytest.approx(0.65)
    assert keeper.position(ETH) == 0.0


def test_a_long_run_of_fills_still_reads_flat():
    keeper = PositionKeeper()
    for _ in range(1000):
        keeper.add_fill(BTC, "buy", 0.1, 100_000.0)
    for _ in range(1000):
        keeper.add_fill(BTC, "sell", 0.1, 100_000.0)
    assert keeper.position(BTC) == 0.0  # exactly: rounded after every fill


def test_pnl_is_the_fills_cash_flow_plus_their_position_at_the_mark():
    keeper = PositionKeeper()
    keeper.add_fill(BTC, "buy", 0.2, 99_900.0)  # cash -19,980
    keeper.add_fill(BTC, "sell", 0.1, 100_100.0)  # cash +10,010
    assert keeper.pnl(BTC, 100_000.0) == pytest.approx(-19_980.0 + 10_010.0 + 0.1 * 100_000.0)  # +30
    assert keeper.pnl(BTC, 99_000.0) == pytest.approx(-70.0)
    assert keeper.pnl(BTC, math.nan) is None and keeper.pnl(BTC, None) is None  # no mark: no judgement
    assert keeper.pnl(ETH, 3_000.0) == 0.0


def test_a_portfolio_read_replaces_the_position_but_the_pnl_keeps_accumulating():
    """A reconnect re-reads the portfolio (the position may have moved meanwhile); the quoting
    session's PnL, for the kill switch, carries on from its fills."""
    keeper = PositionKeeper()
    keeper.reset_from_portfolio([{"instrument_name": BTC, "position": 1.0}])
    keeper.add_fill(BTC, "sell", 0.4, 100_000.0)
    keeper.reset_from_portfolio([{"instrument_name": BTC, "position": 0.7}])
    assert keeper.position(BTC) == 0.7
    assert keeper.pnl(BTC, 99_000.0) == pytest.approx(40_000.0 - 0.4 * 99_000.0)  # +400
    keeper.add_fill(BTC, "buy", 0.4, 99_500.0)
    assert keeper.position(BTC) == pytest.approx(1.1)
    assert keeper.pnl(BTC, 99_000.0) == pytest.approx(40_000.0 - 39_800.0)  # flat on fills: +200 at any mark
