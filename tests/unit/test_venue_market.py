"""The simulated market: same seed, same market; and it trades against whoever quotes.

Driven step by step with fixed timestamps (no server, no clock), so runs are exact
and comparable.
"""
from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from app.venue import Engine, Market, VenueConfig
from app.venue.events import AccountTradeEvent, TradeEvent

T0 = 1_800_000_000.0
BTC = "BTC-PERPETUAL"


def run(seed: int, steps: int, quoter: bool = False, **overrides) -> tuple[list[dict], list[tuple], Engine]:
    config = dataclasses.replace(VenueConfig(), seed=seed, **overrides)
    engine = Engine(config, now=T0)
    market = Market(engine, now=T0)
    path, prints = [], []
    if quoter:
        engine.open_session(1, "A000000001")
    for step in range(steps):
        now = T0 + (step + 1) * config.tick_interval
        if quoter and step % 10 == 0:  # a quoter 1 bp around the index, re-quoted every second
            index = market.index["BTCUSD"]
            for session_order in list(engine.session_orders.get(1, {}).values()):
                engine.cancel("A000000001", 1, order_id=session_order.order_id, now=now)
            engine.insert("A000000001", 1, instrument_name=BTC, direction="buy", amount=0.05,
                          price=float(math.floor(index * 0.9999)), now=now)
            engine.insert("A000000001", 1, instrument_name=BTC, direction="sell", amount=0.05,
                          price=float(math.ceil(index * 1.0001)), now=now)
        market.step(now)
        path.append(dict(market.index))
        prints.extend((e.instrument, e.price, e.amount, e.direction, e.time)
                      for e in engine.take_events() if isinstance(e, TradeEvent))
    return path, prints, engine


def test_same_seed_same_index_path_and_same_public_trades():
    path_a, prints_a, _ = run(seed=42, steps=3000)
    path_b, prints_b, _ = run(seed=42, steps=3000)
    assert path_a == path_b
    assert prints_a == prints_b
    assert len(prints_a) > 100  # the takers did trade


def test_another_seed_another_market():
    path_a, prints_a, _ = run(seed=1, steps=500)
    path_b, prints_b, _ = run(seed=2, steps=500)
    assert path_a != path_b and prints_a != prints_b


def test_the_index_path_does_not_depend_on_outside_orders():
    quiet_path, _, _ = run(seed=7, steps=1000)
    busy_path, _, _ = run(seed=7, steps=1000, quoter=True)
    assert quiet_path == busy_path


def test_index_moves_with_the_configured_volatility():
    steps = 20_000
    path, _, _ = run(seed=3, steps=steps, volatility=2.0, jump_rate=0.0, noise_rate=0.0, informed_rate=0.0,
                     house_levels=0)
    prices = [p["BTCUSD"] for p in path]
    returns = [math.log(b / a) for a, b in zip(prices, prices[1:])]
    per_step = 2.0 * math.sqrt(0.1 / (365.25 * 86_400))
    assert statistics.pstdev(returns) == pytest.approx(per_step, rel=0.05)


def test_a_quoter_inside_the_house_gets_fills_on_both_sides_and_meets_informed_flow():
    _, _, engine = run(seed=11, steps=6000, quoter=True, informed_rate=1.0)
    account = engine.accounts["A000000001"]
    directions = {t["direction"] for t in account.trades}
    assert directions == {"buy", "sell"} and len(account.trades) > 20
    assert all(t["maker_taker"] == "maker" for t in account.trades)
    # The informed takers made money, i.e. somebody (the quoter among others) was picked off.
    informed = engine.accounts["INFORMED"]
    marks = {name: engine.markets[name].mark for name in engine.instruments}
    informed_pnl = sum(p.realised_pnl + p.unrealised_pnl(marks[name]) for name, p in informed.positions.items())
    assert informed_pnl > 0


def test_house_keeps_a_ladder_around_the_index():
    _, _, engine = run(seed=5, steps=50)
    book = engine.books[BTC]
    config = engine.config
    assert len(book.bid_prices) == config.house_levels and len(book.ask_prices) == config.house_levels
    assert not book.crossed()
    events = [e for e in engine.take_events() if isinstance(e, AccountTradeEvent)]
    assert events == []  # internal accounts keep no trade records
