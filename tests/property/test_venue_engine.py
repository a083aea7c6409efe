"""The matching engine (app/venue/) under random order flows keeps its invariants (no crossed book,
orders consistent with their fills, positions netting to zero and equal to the fills, every trade
two-sided, post-only orders never taking), and the 24 h low and high follow the trades of the last day.
Examples: tests/unit/test_venue_engine.py.
"""
from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.venue import VenueError
from app.venue.events import AccountTradeEvent, OrderEvent
from tests.unit.test_venue_engine import BTC, T0, make_engine

ACCOUNTS = ("A000000001", "A000000002", "A000000003")


amend_ops = st.fixed_dictionaries({
    "op": st.just("amend"), "pick": st.integers(0, 1000), "ticks": st.integers(99_996, 100_004),
    "units": st.integers(0, 40),
})


def busy_flow(seed: int, length: int) -> list[dict]:
    """A long flow where most orders meet the book (hypothesis' own lists favour simple values)."""
    rng = random.Random(seed)
    ops = []
    for _ in range(length):
        roll = rng.random()
        if roll < 0.7:
            ops.append({"op": "insert", "who": rng.randrange(3), "direction": rng.choice(["buy", "sell"]),
                        "kind": rng.choice(["limit", "limit", "limit", "ioc", "market", "post_only", "reduce_only"]),
                        "ticks": rng.randint(99_996, 100_004), "units": rng.randint(1, 40)})
        elif roll < 0.85:
            ops.append({"op": "amend", "pick": rng.randrange(1000), "ticks": rng.randint(99_996, 100_004),
                        "units": rng.randint(0, 40)})
        else:
            ops.append({"op": "cancel", "pick": rng.randrange(1000)})
    return ops


cancel_ops = st.fixed_dictionaries({"op": st.just("cancel"), "pick": st.integers(0, 1000)})


order_ops = st.fixed_dictionaries({
    "op": st.just("insert"),
    "who": st.integers(0, 2),
    "direction": st.sampled_from(["buy", "sell"]),
    "kind": st.sampled_from(["limit", "limit", "limit", "ioc", "market", "post_only", "reduce_only"]),
    "ticks": st.integers(99_996, 100_004),
    "units": st.integers(1, 40),
})


def run_flow(ops: list[dict]) -> None:
    engine = make_engine()
    for i, account in enumerate(ACCOUNTS):
        engine.open_session(i + 1, account)
    fills_by_trade: dict[str, list[tuple[str, str, int, float, str]]] = defaultdict(list)
    signed_fills: dict[str, float] = defaultdict(float)
    post_only_ids: set[str] = set()
    statuses: dict[str, dict] = {}
    for step, op in enumerate(ops):
        now = T0 + step
        try:
            if op["op"] == "insert":
                who = op["who"]
                kw: dict = {}
                price: float | None = float(op["ticks"])
                if op["kind"] == "ioc":
                    kw["time_in_force"] = "immediate_or_cancel"
                elif op["kind"] == "market":
                    kw["order_type"] = "market"
                    price = None
                elif op["kind"] == "post_only":
                    kw["post_only"] = True
                elif op["kind"] == "reduce_only":
                    kw["reduce_only"] = True
                status = engine.insert(ACCOUNTS[who], who + 1, instrument_name=BTC, direction=op["direction"],
                                       amount=op["units"] * 0.001, price=price, now=now, **kw)
                if op["kind"] == "post_only":
                    post_only_ids.add(status["order_id"])
            else:
                live = sorted(engine.orders.values(), key=lambda o: o.order_id)
                if not live:
                    continue
                order = live[op["pick"] % len(live)]
                if op["op"] == "amend":
                    engine.amend(order.account, order.session, order_id=order.order_id, price=float(op["ticks"]),
                                 amount=op["units"] * 0.001, now=now)
                else:
                    engine.cancel(order.account, order.session, order_id=order.order_id, now=now)
        except VenueError:
            pass
        for event in engine.take_events():
            if isinstance(event, OrderEvent):
                statuses[event.status["order_id"]] = event.status
                for fill in event.status["fills"]:
                    fills_by_trade[fill["trade_id"]].append(
                        (event.status["order_id"], event.status["direction"], round(fill["amount"] * 1000),
                         fill["price"], fill["maker_taker"]))
            if isinstance(event, AccountTradeEvent):
                sign = 1 if event.trade["direction"] == "buy" else -1
                signed_fills[event.account] += sign * event.trade["amount"]

        book = engine.books[BTC]
        assert not book.crossed(), "the book crossed after matching"
        for order in book.orders():
            assert order.live and order.remaining > 0 and engine.orders[order.order_id] is order
        for order in engine.orders.values():
            assert 0 <= order.filled < order.units
            assert order.filled == sum(f.units for f in order.fills)
        positions = {a: engine.accounts[a].positions[BTC].units if BTC in engine.accounts[a].positions else 0
                     for a in ACCOUNTS}
        assert sum(positions.values()) == 0, "positions do not net to zero"
        for account in ACCOUNTS:
            assert round(signed_fills[account] * 1000) == positions[account], "position != sum of fills"

    for trade_id, sides in fills_by_trade.items():
        assert len(sides) == 2, f"trade {trade_id} has {len(sides)} sides"
        (_, dir_a, units_a, price_a, role_a), (_, dir_b, units_b, price_b, role_b) = sides
        assert units_a == units_b and price_a == price_b and dir_a != dir_b
        assert {role_a, role_b} == {"maker", "taker"}
    for trade_id, sides in fills_by_trade.items():
        for order_id, _d, _u, _p, role in sides:
            if order_id in post_only_ids:
                assert role == "maker", "a post-only order took liquidity"
    for status in statuses.values():
        assert status["filled_amount"] <= status["amount"] + 1e-12


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(order_ops, order_ops, order_ops, amend_ops, cancel_ops), min_size=5, max_size=60))
def test_random_flow_keeps_the_invariants(ops):
    run_flow(ops)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_long_busy_flows_keep_the_invariants(seed):
    run_flow(busy_flow(seed, 300))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20_000), st.integers(99_000, 101_000), st.integers(1, 50)), max_size=60))
def test_24h_low_and_high_follow_the_trades_of_the_last_day(trades):
    """The ticker's 24 h low/high come from monotonic queues; they must equal a scan of the
    day's trades after every trade and every expiry."""
    from app.venue.instruments import DEFAULT_INSTRUMENTS
    from app.venue.marks import DAY, MarketState

    ins = DEFAULT_INSTRUMENTS[0]
    market = MarketState(100_000.0, 0.0)
    now = 0.0
    for gap, price, units in trades:
        now += gap  # about 8 trades a day on average: the window both fills and empties
        market.expire_trades(now, ins)
        market.add_trade(now, float(price), units, ins.amount(units))
        prices = [p for t, p, _u in market.trades_24h]
        assert all(now - t <= DAY for t, _p, _u in market.trades_24h)
        assert (market.low_24h[0][1], market.high_24h[0][1]) == (min(prices), max(prices))
        assert market.volume_24h == sum(u for _t, _p, u in market.trades_24h)
    market.expire_trades(now + DAY + 1, ins)
    assert not market.trades_24h and not market.low_24h and not market.high_24h
