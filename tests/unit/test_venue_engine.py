"""The venue's matching engine, driven directly (no server): the order rules by example. They pin
down each order type and flag, amend, reduce-only, mass-quote replacement, MM protection,
fees, P&L and funding against docs/thalex-protocol.md. Random order flows and their invariants:
tests/property/test_venue_engine.py.
"""
from __future__ import annotations

import dataclasses

import pytest

from app.venue import Engine, VenueConfig, VenueError
from app.venue.events import AccountTradeEvent, OrderEvent, ProtectionEvent, TradeEvent
from app.venue.marks import fair_price
from app.venue.orders import BUY

T0 = 1_800_000_000.0
BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"


def make_engine(**overrides) -> Engine:
    return Engine(dataclasses.replace(VenueConfig(), **overrides), now=T0)


class Trader:
    """One account on one session, with short order helpers."""

    def __init__(self, engine: Engine, account: str, session: int) -> None:
        self.engine = engine
        self.account = account
        self.session = session
        engine.open_session(session, account)

    def order(self, direction: str, amount: float, price: float | None = None, instrument: str = BTC,
              **kw) -> dict:
        return self.engine.insert(self.account, self.session, instrument_name=instrument, direction=direction,
                                  amount=amount, price=price, now=kw.pop("now", T0), **kw)

    def buy(self, amount: float, price: float | None = None, **kw) -> dict:
        return self.order("buy", amount, price, **kw)

    def sell(self, amount: float, price: float | None = None, **kw) -> dict:
        return self.order("sell", amount, price, **kw)

    def position(self, instrument: str = BTC) -> float:
        pos = self.engine.accounts[self.account].positions.get(instrument)
        return 0.0 if pos is None else pos.contracts


def error_code(fn, *args, **kwargs) -> int:
    with pytest.raises(VenueError) as info:
        fn(*args, **kwargs)
    return info.value.code


@pytest.fixture
def engine() -> Engine:
    return make_engine()


@pytest.fixture
def alice(engine: Engine) -> Trader:
    return Trader(engine, "A000000001", 1)


@pytest.fixture
def bob(engine: Engine) -> Trader:
    return Trader(engine, "A000000002", 2)


# -- properties ----------------------------------------------------------------


# -- order entry ---------------------------------------------------------------

def test_limit_order_rests_with_the_documented_status_fields(alice: Trader):
    status = alice.buy(0.2, 95000, client_order_id=100, label="P")
    assert status["status"] == "open" and status["change_reason"] == "insert"
    assert status["insert_reason"] == "client_request" and status["persistent"] is True
    assert status["remaining_amount"] == 0.2 and status["filled_amount"] == 0.0 and status["fills"] == []
    assert status["price"] == 95000 and status["label"] == "P" and status["client_order_id"] == 100
    assert status["time_in_force"] == "good_till_cancelled" and status["order_type"] == "limit"
    assert len(status["order_id"]) == 16 and "delete_reason" not in status and "reduce_only" not in status


def test_price_time_priority_and_maker_price(engine: Engine, alice: Trader, bob: Trader):
    first = alice.sell(0.1, 100010)
    second = bob.sell(0.1, 100010)
    better = bob.sell(0.05, 100005)
    taker = Trader(engine, "A000000003", 3).buy(0.2, 100020)
    prices = [(f["price"], f["amount"]) for f in taker["fills"]]
    assert prices == [(100005, 0.05), (100010, 0.1), (100010, 0.05)]
    assert engine.orders.get(first["order_id"]) is None  # filled first: it was there first
    assert engine.orders[second["order_id"]].remaining == 50
    assert engine.orders.get(better["order_id"]) is None
    assert taker["status"] == "filled" and taker["delete_reason"] == "filled"


def test_market_order_sweeps_levels_and_ioc_remainder_is_cancelled(alice: Trader, bob: Trader):
    alice.sell(0.1, 100001)
    alice.sell(0.1, 100002)
    market = bob.buy(0.3, order_type="market")
    assert "price" not in market and market["time_in_force"] == "immediate_or_cancel"
    assert [f["price"] for f in market["fills"]] == [100001, 100002]
    assert market["status"] == "cancelled_partially_filled" and market["delete_reason"] == "immediate_cancel"
    assert market["filled_amount"] == 0.2 and market["remaining_amount"] == 0


def test_ioc_limit_takes_what_it_can_at_its_limit(alice: Trader, bob: Trader):
    alice.sell(0.1, 100001)
    alice.sell(0.1, 100005)
    ioc = bob.buy(0.3, 100003, time_in_force="immediate_or_cancel")
    assert ioc["filled_amount"] == 0.1 and ioc["status"] == "cancelled_partially_filled"
    empty = bob.buy(0.1, 99000, time_in_force="immediate_or_cancel")
    assert empty["status"] == "cancelled" and empty["delete_reason"] == "immediate_cancel"


def test_post_only_reprices_one_tick_inside_and_reject_post_only_cancels(alice: Trader, bob: Trader):
    alice.sell(0.1, 100010)
    repriced = bob.buy(0.1, 100050, post_only=True)
    assert repriced["price"] == 100009 and repriced["status"] == "open" and repriced["fills"] == []
    rejected = bob.buy(0.1, 100050, post_only=True, reject_post_only=True)
    assert rejected["status"] == "cancelled" and rejected["delete_reason"] == "immediate_cancel"
    passive = bob.buy(0.1, 100000, post_only=True, reject_post_only=True)
    assert passive["status"] == "open" and passive["price"] == 100000


def test_illegal_flag_combinations(alice: Trader):
    assert error_code(alice.buy, 0.1, order_type="market", time_in_force="good_till_cancelled") == 25
    assert error_code(alice.buy, 0.1, 100000, post_only=True, time_in_force="immediate_or_cancel") == 25
    assert error_code(alice.buy, 0.1, 100000, reject_post_only=True) == 6
    assert error_code(alice.buy, 0.1, 100000, time_in_force="fill_or_kill") == 25
    assert error_code(alice.order, "up", 0.1, 100000) == 6
    assert error_code(alice.buy, 0.1) == 6  # a limit order needs a price
    assert error_code(alice.buy, 0.1, 100000, order_type="market") == 6


def test_validation_codes(alice: Trader):
    assert error_code(alice.buy, 0.1, 100000.5) == 15
    assert error_code(alice.buy, 0.1, 3500.05, instrument=ETH) == 15
    assert error_code(alice.buy, 0.0015, 100000) == 14
    assert error_code(alice.buy, 0.0, 100000) == 14
    assert error_code(alice.buy, 0.005, 3500.1, instrument=ETH) == 14
    assert error_code(alice.buy, 0.1, 0) == 13
    assert error_code(alice.buy, 0.1, -5) == 13
    assert error_code(alice.buy, 0.1, 100000, instrument="DOGE-PERPETUAL") == 5
    assert error_code(alice.buy, 0.1, 100000, label="bad label!") == 6
    assert error_code(alice.buy, 0.1, 100000, client_order_id=-1) == 6
    alice.buy(0.1, 100000, client_order_id=7)
    assert error_code(alice.buy, 0.1, 100000, client_order_id=7) == 2
    # 8-decimal rounding before the tick check (docs/thalex-protocol.md §5.5): 3.0999999999999999-style noise is fine.
    assert alice.buy(0.30000000000000004, 3500.1000000000004, instrument=ETH)["amount"] == 0.3


def test_client_order_id_is_session_local_and_reusable_after_the_order_ends(engine: Engine, alice: Trader):
    other_session = Trader(engine, alice.account, 9)
    alice.buy(0.1, 99000, client_order_id=5)
    other_session.buy(0.1, 99000, client_order_id=5)  # another session: no clash
    alice_cancel = engine.cancel(alice.account, alice.session, client_order_id=5, now=T0)
    assert alice_cancel["status"] == "cancelled" and alice_cancel["delete_reason"] == "client_cancel"
    assert alice_cancel["close_time"] == T0
    assert alice.buy(0.1, 99000, client_order_id=5)["status"] == "open"


def test_price_collar_reject_clamp_ignore(alice: Trader):
    # mark 100000, collar 5 %: bids above 105000 and asks below 95000 breach it.
    assert error_code(alice.buy, 0.1, 106000) == 43
    assert alice.buy(0.1, 106000, collar="clamp")["price"] == 105000
    assert alice.buy(0.1, 106000, collar="ignore")["price"] == 106000
    assert error_code(alice.sell, 0.1, 94000) == 43
    assert error_code(alice.buy, 0.1, order_type="market", collar="ignore") == 6


def test_market_orders_stop_at_the_collar(alice: Trader, bob: Trader):
    alice.sell(0.1, 104000, collar="ignore")
    alice.sell(0.1, 106000, collar="ignore")
    market = bob.buy(0.2, order_type="market")
    assert [f["price"] for f in market["fills"]] == [104000]


def test_reduce_only(engine: Engine, alice: Trader, bob: Trader):
    assert error_code(alice.sell, 0.1, 100000, reduce_only=True) == 6  # no position
    bob.sell(0.3, 100000)
    alice.buy(0.3, 100000)
    assert error_code(alice.buy, 0.1, 99000, reduce_only=True) == 6  # would increase
    capped = alice.sell(1.0, 101000, reduce_only=True)
    assert capped["amount"] == 0.3 and capped["reduce_only"] is True
    # The position shrinks by another sale: the reduce-only order shrinks with it.
    bob.buy(0.2, 99500)
    alice.sell(0.2, 99500)
    assert engine.orders[capped["order_id"]].remaining == 100
    # Flat: the reduce-only order has nothing left to reduce and is cancelled.
    bob.buy(0.1, 99400)
    alice.sell(0.1, 99400)
    assert capped["order_id"] not in engine.orders


# -- amend and cancel ------------------------------------------------------------

def test_amend_smaller_at_same_price_keeps_priority_and_bigger_loses_it(engine: Engine, alice: Trader,
                                                                          bob: Trader):
    first = alice.sell(0.2, 100010, client_order_id=1)
    second = bob.sell(0.2, 100010)
    amended = engine.amend(alice.account, alice.session, client_order_id=1, price=100010, amount=0.1, now=T0)
    assert amended["change_reason"] == "amend" and amended["amount"] == 0.1
    level = list(engine.books[BTC].level(-BUY, 100010))
    assert level == [first["order_id"], second["order_id"]]
    engine.amend(alice.account, alice.session, order_id=first["order_id"], price=100010, amount=0.3, now=T0)
    level = list(engine.books[BTC].level(-BUY, 100010))
    assert level == [second["order_id"], first["order_id"]]


def test_amend_is_volume_safe(engine: Engine, alice: Trader, bob: Trader):
    order = alice.sell(0.5, 100010)
    bob.buy(0.2, 100010)  # 0.2 of 0.5 filled
    amended = engine.amend(alice.account, alice.session, order_id=order["order_id"], price=100012,
                           amount=0.3, now=T0)
    assert amended["amount"] == 0.3 and amended["filled_amount"] == 0.2 and amended["remaining_amount"] == 0.1
    assert amended["price"] == 100012
    gone = engine.amend(alice.account, alice.session, order_id=order["order_id"], price=100012,
                        amount=0.2, now=T0)  # at or below filled: cancelled
    assert gone["status"] == "cancelled_partially_filled" and gone["remaining_amount"] == 0
    assert order["order_id"] not in engine.orders


def test_amend_to_zero_cancels_and_amend_across_the_book_trades(engine: Engine, alice: Trader, bob: Trader):
    resting = alice.buy(0.1, 99990)
    assert engine.amend(alice.account, alice.session, order_id=resting["order_id"], price=99990, amount=0,
                        now=T0)["status"] == "cancelled"
    bob.sell(0.1, 100010)
    bid = alice.buy(0.1, 99990)
    crossed = engine.amend(alice.account, alice.session, order_id=bid["order_id"], price=100010, amount=0.1,
                           now=T0)
    assert crossed["status"] == "filled" and crossed["fills"][0]["maker_taker"] == "taker"


def test_amend_and_cancel_errors(engine: Engine, alice: Trader, bob: Trader):
    order = alice.buy(0.1, 99000)
    assert error_code(engine.amend, bob.account, bob.session, order_id=order["order_id"], price=99000,
                      amount=0.1, now=T0) == 1  # someone else's order is not found
    assert error_code(engine.cancel, alice.account, alice.session, order_id="FFFF", now=T0) == 1
    assert error_code(engine.cancel, alice.account, alice.session, client_order_id=12345, now=T0) == 1
    assert error_code(engine.cancel, alice.account, alice.session, now=T0) == 6
    assert error_code(engine.amend, alice.account, alice.session, order_id=order["order_id"], price=99000.5,
                      amount=0.1, now=T0) == 15
    assert error_code(engine.amend, alice.account, alice.session, order_id=order["order_id"], price=99000,
                      amount=0.0005 + 0.0001, now=T0) == 14
    engine.cancel(alice.account, alice.session, order_id=order["order_id"], now=T0)
    assert error_code(engine.cancel, alice.account, alice.session, order_id=order["order_id"], now=T0) == 1


def test_cancel_all_cancels_every_session_of_the_account(engine: Engine, alice: Trader):
    other = Trader(engine, alice.account, 7)
    alice.buy(0.1, 99000)
    other.buy(0.1, 98000)
    engine.take_events()
    assert engine.cancel_all(alice.account, T0) == 2
    reasons = {e.status["delete_reason"] for e in engine.take_events() if isinstance(e, OrderEvent)}
    assert reasons == {"client_bulk_cancel"} and not engine.orders


def test_cancel_session_deletes_only_non_persistent_orders(engine: Engine, alice: Trader):
    persistent = alice.buy(0.1, 99000)
    engine.set_cancel_on_disconnect(alice.session)
    volatile = alice.buy(0.1, 98000)
    assert volatile["persistent"] is False
    engine.take_events()
    assert engine.cancel_session(alice.session, T0) == 1
    events = [e.status for e in engine.take_events() if isinstance(e, OrderEvent)]
    assert [(s["order_id"], s["delete_reason"]) for s in events] == [(volatile["order_id"], "session_end")]
    assert persistent["order_id"] in engine.orders


def test_self_trade_prevention_only_when_enabled():
    engine = make_engine()
    alice = Trader(engine, "A000000001", 1)
    alice.sell(0.1, 100000)
    assert alice.buy(0.1, 100000)["status"] == "filled"  # STP off by default: self-trades happen
    engine = make_engine(stp_enabled=True)
    alice = Trader(engine, "A000000001", 1)
    bob = Trader(engine, "A000000002", 2)
    bob.sell(0.1, 100000)
    alice.sell(0.1, 100001)
    partial = alice.buy(0.3, 100001)
    assert partial["filled_amount"] == 0.1 and partial["delete_reason"] == "self_trade_prevention"
    bob.sell(0.1, 100000)
    none = alice.buy(0.3, 100001, stp_action="cancel_aggressive_no_fill")
    assert none["filled_amount"] == 0 and none["delete_reason"] == "self_trade_prevention"
    allowed = alice.buy(0.2, 100001, stp_level="disabled")
    assert allowed["filled_amount"] == 0.2


# -- mass quoting and MM protection ------------------------------------------------

@pytest.fixture
def quoter(engine: Engine) -> Trader:
    trader = Trader(engine, "A000000009", 9)
    engine.set_cancel_on_disconnect(9)
    engine.set_mm_protection(trader.account, 9, product="FBTCUSD", trade_amount=1.0, quote_amount=1.0, now=T0)
    return trader


def quotes_of(engine: Engine, session: int) -> dict[tuple[str, float], str]:
    return {("buy" if o.direction == BUY else "sell", o.instrument.price(o.ticks)): o.order_id
            for o in engine.session_orders.get(session, {}).values() if o.is_quote}


def mass_quote(engine: Engine, trader: Trader, quotes: list, **kw) -> dict:
    return engine.mass_quote(trader.account, trader.session, quotes=quotes, now=T0, **kw)


def test_mass_quote_preconditions(engine: Engine, alice: Trader):
    assert error_code(mass_quote, engine, alice, [{"i": BTC, "b": [[99990, 0.1]]}]) == 52
    engine.set_cancel_on_disconnect(alice.session)
    result = mass_quote(engine, alice, [{"i": BTC, "b": [[99990, 0.1]]}])
    assert result["n_success"] == 0 and result["n_fail"] == 1 and result["errors"][0]["code"] == 23
    assert error_code(engine.set_mm_protection, alice.account, alice.session, product="FXXXUSD",
                      trade_amount=1, quote_amount=1, now=T0) == 17
    assert error_code(engine.set_mm_protection, alice.account, alice.session, product="FBTCUSD",
                      trade_amount=1, quote_amount=0.5, now=T0) == 6


def test_mass_quote_replacement_rules(engine: Engine, quoter: Trader):
    result = mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.2], [99980, 0.4]],
                                          "a": [[100010, 0.2], [100020, 0.4]]}], label="MQ", post_only=True)
    assert result == {"n_success": 4, "n_fail": 0, "errors": []}
    before = quotes_of(engine, 9)
    assert len(before) == 4
    # Same price and amount: kept (same order, same priority); omitted level: removed; new level: new order.
    mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.2], [99970, 0.4]]}])
    after = quotes_of(engine, 9)
    assert after[("buy", 99990)] == before[("buy", 99990)]
    assert ("buy", 99980) not in after and ("buy", 99970) in after
    assert after[("sell", 100010)] == before[("sell", 100010)]  # the side not sent is untouched
    # A changed amount replaces the quote.
    mass_quote(engine, quoter, [{"i": BTC, "a": [[100010, 0.3], [100020, 0.4]]}])
    assert quotes_of(engine, 9)[("sell", 100010)] != before[("sell", 100010)]
    # Single-level object form; a: 0 deletes; an empty array clears a side.
    mass_quote(engine, quoter, [{"i": BTC, "b": {"p": 99995, "a": 0.1}}])
    assert [k for k in quotes_of(engine, 9) if k[0] == "buy"] == [("buy", 99995)]
    mass_quote(engine, quoter, [{"i": BTC, "b": {"p": 99995, "a": 0}, "a": []}])
    assert quotes_of(engine, 9) == {}
    replaced = [e.status for e in engine.take_events() if isinstance(e, OrderEvent)
                and e.status.get("delete_reason") == "replaced"]
    assert replaced and all(s["status"] == "cancelled" for s in replaced)


def test_mass_quote_level_errors(engine: Engine, quoter: Trader):
    result = mass_quote(engine, quoter, [
        {"i": BTC, "b": [[99990.5, 0.1], [99980, 2.0], [99970, 0.1]]},
        {"i": "NOPE", "b": [[1, 1]]},
    ])
    assert result["n_success"] == 1 and result["n_fail"] == 3
    assert sorted(e["code"] for e in result["errors"]) == [5, 15, 44]
    tick_error = next(e for e in result["errors"] if e["code"] == 15)
    assert tick_error["side"] == "buy" and tick_error["price"] == 99990.5


def test_mm_protection_pulls_quotes_after_trade_amount_and_refills(engine: Engine, quoter: Trader, bob: Trader):
    mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.6], [99980, 0.6]], "a": [[100010, 0.6]]}])
    engine.take_events()
    bob.sell(1.0, 99980)  # sweeps 0.6 + 0.4: the 1.0 group is used up
    events = engine.take_events()
    protection = [e for e in events if isinstance(e, ProtectionEvent)]
    assert [(p.product, p.reason) for p in protection] == [("FBTCUSD", "executions")]
    assert protection[0].remaining_amount <= 0
    pulled = [e.status for e in events
              if isinstance(e, OrderEvent) and e.status.get("delete_reason") == "mm_protection"]
    assert {s["price"] for s in pulled} == {99980, 100010}
    assert quotes_of(engine, 9) == {}
    result = mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.1]]}])
    assert result["n_fail"] == 1 and result["errors"][0]["code"] == 22  # exhausted: refill first
    engine.set_mm_protection(quoter.account, 9, product="FBTCUSD", trade_amount=1.0, quote_amount=1.0, now=T0)
    assert mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.1]]}])["n_success"] == 1


def test_session_end_removes_quotes_and_protection(engine: Engine, quoter: Trader):
    mass_quote(engine, quoter, [{"i": BTC, "b": [[99990, 0.1]]}])
    engine.take_events()
    engine.close_session(9, T0)
    events = engine.take_events()
    assert [e.reason for e in events if isinstance(e, ProtectionEvent)] == ["session_end"]
    assert not engine.orders and not engine.protection


# -- fees, P&L, funding ------------------------------------------------------------

def test_fees_are_price_times_amount_times_rate(engine: Engine, alice: Trader, bob: Trader):
    alice.sell(0.5, 100000)
    bob.buy(0.5, 100000)
    trades = {e.account: e.trade for e in engine.take_events() if isinstance(e, AccountTradeEvent)}
    maker, taker = trades[alice.account], trades[bob.account]
    assert maker["maker_taker"] == "maker" and maker["fee_rate"] == 0.0001
    assert maker["fee"] == pytest.approx(100000 * 0.5 * 0.0001)  # 5 USD
    assert taker["fee_rate"] == 0.0005 and taker["fee"] == pytest.approx(25.0)
    assert taker["fee_basis"] == 100000 and taker["trade_id"] == maker["trade_id"]
    assert taker["position_after"] == 0.5 and maker["position_after"] == -0.5
    assert taker["trade_type"] == "normal" and taker["leg_index"] == 0


def test_configurable_fee_rates():
    engine = make_engine(maker_fee_rate=0.0, taker_fee_rate=0.001)
    alice, bob = Trader(engine, "A000000001", 1), Trader(engine, "A000000002", 2)
    alice.sell(1, 100000)
    bob.buy(1, 100000)
    fees = sorted(e.trade["fee"] for e in engine.take_events() if isinstance(e, AccountTradeEvent))
    assert fees == [0.0, pytest.approx(100.0)]


def test_realised_and_unrealised_pnl(engine: Engine, alice: Trader, bob: Trader):
    bob.sell(1.0, 100000)
    alice.buy(1.0, 100000)
    bob.sell(1.0, 100200)
    alice.buy(1.0, 100200)  # long 2 at 100100 average
    pos = engine.accounts[alice.account].positions[BTC]
    assert pos.average_price == pytest.approx(100100)
    bob.buy(0.5, 100300)
    alice.sell(0.5, 100300)  # closes 0.5 at +200
    assert pos.realised_pnl == pytest.approx(100.0)
    assert pos.contracts == pytest.approx(1.5)
    bob.buy(2.0, 100000)
    alice.sell(2.0, 100000)  # closes 1.5 at -100 and opens a 0.5 short at 100000
    assert pos.realised_pnl == pytest.approx(100.0 - 150.0)
    assert pos.contracts == pytest.approx(-0.5) and pos.average_price == 100000
    engine.advance({"BTCUSD": 100000.0}, 1.0, T0 + 1)
    entry = engine.portfolio(alice.account)[0]
    assert entry["position"] == -0.5 and entry["average_price"] == 100000
    assert entry["unrealised_pnl"] == pytest.approx(-0.5 * (entry["mark_price"] - 100000))
    summary = engine.account_summary(alice.account)
    fees = engine.accounts[alice.account].positions[BTC].fees
    assert summary["session_realised_pnl"] == pytest.approx(-50.0 - fees)
    assert summary["cash"][0]["balance"] == pytest.approx(1_000_000 - 50.0 - fees)
    assert summary["required_margin"] == pytest.approx(0.5 * entry["mark_price"] * 0.01)


def test_funding_accrues_on_the_24h_basis_and_longs_pay_a_positive_rate():
    # docs/thalex-protocol.md §5.3's worked example: mark 50,100, index 50,000, long 4 for 3 h pays $50.
    engine = make_engine(mark_ema_seconds=1e-9)  # the mark follows the premium at once
    alice, bob = Trader(engine, "A000000001", 1), Trader(engine, "A000000002", 2)
    bob.sell(0.001, 50200, collar="ignore")
    bob.buy(0.001, 50000, collar="ignore")  # mid 50,100
    carol = Trader(engine, "A000000003", 3)
    carol.sell(4, 50150, collar="ignore")
    alice.buy(4, 50150, collar="ignore")  # alice long 4
    bob.sell(0.001, 50200, collar="ignore")  # keep the book at 50,000 / 50,200
    for second in range(3 * 3600):
        engine.advance({"BTCUSD": 50000.0}, 1.0, T0 + second)
    market = engine.markets[BTC]
    assert market.mark == pytest.approx(50100)
    assert market.funding_rate == pytest.approx(100 / 50000)
    assert market.funding_mark == pytest.approx(100 * 3 / 24, rel=1e-3)
    alice_pos = engine.accounts[alice.account].positions[BTC]
    carol_pos = engine.accounts[carol.account].positions[BTC]
    assert alice_pos.unrealised_funding(market.funding_mark) == pytest.approx(-50.0, rel=1e-3)
    assert carol_pos.unrealised_funding(market.funding_mark) == pytest.approx(50.0, rel=1e-3)
    # Closing realises it.
    bob.buy(4, 50000, collar="ignore")
    alice.sell(4, 50000, collar="ignore")
    assert alice_pos.realised_funding == pytest.approx(-50.0, rel=1e-3)
    trade = [e.trade for e in engine.take_events() if isinstance(e, AccountTradeEvent)
             and e.account == alice.account][-1]
    assert trade["perpetual_funding_pnl"] == pytest.approx(-50.0, rel=1e-3)


def test_funding_dampener():
    engine = make_engine(mark_ema_seconds=1e-9, funding_dampener_bps=2.5)
    bob = Trader(engine, "A000000002", 2)
    bob.sell(0.001, 100040)
    bob.buy(0.001, 99980)  # mid 100,010: a 1 bp premium, inside the band
    engine.advance({"BTCUSD": 100000.0}, 1.0, T0)
    assert engine.markets[BTC].funding_rate == 0.0
    bob.buy(0.001, 100030)  # mid 100,035: 3.5 bp, counts as 1 bp
    engine.advance({"BTCUSD": 100000.0}, 1.0, T0 + 1)
    assert engine.markets[BTC].funding_rate == pytest.approx(0.0001)


def test_the_premium_is_measured_from_the_mid_or_the_side_that_is_there(engine: Engine, bob: Trader):
    """marks.fair_price: the mid price; one side only: the index, bounded by that side; no book: the index."""
    ins, book = engine.instruments[BTC], engine.books[BTC]
    assert fair_price(ins, book, 100000.0) == 100000.0
    bob.buy(0.001, 100020)  # a bid above the index lifts it
    assert fair_price(ins, book, 100000.0) == 100020.0
    assert fair_price(ins, book, 100050.0) == 100050.0  # a bid below the index does not
    bob.sell(0.001, 100060)
    assert fair_price(ins, book, 100000.0) == 100040.0
    engine.cancel_all(bob.account, T0)
    bob.sell(0.001, 99990)
    assert fair_price(ins, book, 100000.0) == 99990.0  # an ask below the index lowers it
    assert fair_price(ins, book, 99900.0) == 99900.0


def test_trade_history_filters_and_paging(engine: Engine, alice: Trader, bob: Trader):
    for i in range(5):
        bob.sell(0.1, 100000 + i, now=T0 + i)
        alice.buy(0.1, 100000 + i, label="X" if i % 2 else "Y", now=T0 + i)
    page = engine.trade_history(alice.account, {"limit": 2})
    assert [t["price"] for t in page["trades"]] == [100004, 100003] and page["bookmark"]
    rest = engine.trade_history(alice.account, {"limit": 10, "bookmark": page["bookmark"]})
    assert [t["price"] for t in rest["trades"]] == [100002, 100001, 100000] and "bookmark" not in rest
    labelled = engine.trade_history(alice.account, {"label": "X", "sort": "ascending"})
    assert [t["price"] for t in labelled["trades"]] == [100001, 100003]
    window = engine.trade_history(alice.account, {"time_low": T0 + 1, "time_high": T0 + 2})
    assert len(window["trades"]) == 2


def test_public_prints_and_ticker_fields(engine: Engine, alice: Trader, bob: Trader):
    alice.sell(0.3, 100010)
    bob.buy(0.1, 100010)
    prints = [e for e in engine.take_events() if isinstance(e, TradeEvent)]
    assert [(p.price, p.amount, p.direction) for p in prints] == [(100010, 0.1, "buy")]
    ticker = engine.ticker(BTC)
    assert ticker["last_price"] == 100010 and ticker["best_ask_price"] == 100010
    assert ticker["best_ask_amount"] == 0.2 and ticker["best_bid_price"] is None
    assert ticker["volume_24h"] == 0.1 and ticker["open_interest"] == 0.1 and ticker["delta"] == 1
    assert {"mark_price", "mark_timestamp", "index", "collar_low", "collar_high", "funding_rate",
            "funding_mark"} <= set(ticker)
    lwt = engine.lwt(BTC)
    assert lwt["a"] == [100010, 0.2, 0.2] and "b" not in lwt and lwt["l"] == 100010


