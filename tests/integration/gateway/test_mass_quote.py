"""The order gateway's mass-quote mode (private/mass_quote, MM protection) against the simulated venue."""
from __future__ import annotations

import asyncio

import pytest

from app.gateway import OrderGateway
from tests.integration.gateway.venue_setup import (
    ASKS,
    BIDS,
    BTC,
    PRODUCT,
    QUOTER,
    TICK,
    connection,
    open_client,
    quotes_by_price,
    resting,
    settle,
    shifted,
    stamps,
    until,
)

pytestmark = pytest.mark.timeout(60)


async def test_mass_quote_ladder_replaces_only_what_moved(venue, mass_quoter):
    client, gateway, recorder = mass_quoter
    conn = connection(venue, client)
    sent = gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(0))
    assert (sent.quotes, sent.inserts, sent.amends, sent.cancels) == (1, 0, 0, 0)
    await settle(client, gateway)
    # Protection was set first, with the configured amounts; then one request placed the whole ladder.
    group = venue.engine.protection[(conn.session, PRODUCT)]
    assert (group.trade_amount, group.quote_amount) == (0.5, 1.0)
    assert resting(venue, client) == {("buy", 99_900, 0.2), ("buy", 99_895, 0.4),
                                      ("sell", 100_100, 0.2), ("sell", 100_105, 0.4)}
    first = quotes_by_price(venue, client)
    mine = gateway.open_orders(BTC)
    assert {o.order_id for o in mine} == set(first.values()) and all(o.client_order_id is None for o in mine)
    assert [(o.direction, o.price) for o in mine] == [("buy", 99_900), ("buy", 99_895), ("sell", 100_100),
                                                      ("sell", 100_105)]
    assert len(recorder.acks) == 4 and all((a.received_at, a.quoted_at) == stamps(0) for a in recorder.acks)
    assert all(a.order_sent_at is not None for a in recorder.acks)

    # The same ladder, or one within the amend threshold (5 ticks): nothing is sent.
    for ticks in (0, 3, -5):
        assert gateway.reconcile(BTC, TICK, shifted(BIDS, ticks), shifted(ASKS, ticks), stamps(1)).quotes == 0
    assert gateway.stats["mass_quotes"] == 1

    # Only the bids move beyond it: one request, with only the bid side; the asks keep their orders.
    assert gateway.reconcile(BTC, TICK, shifted(BIDS, -6), ASKS, stamps(2)).quotes == 1
    await settle(client, gateway)
    second = quotes_by_price(venue, client)
    assert set(second) == {("buy", 99_894), ("buy", 99_889), ("sell", 100_100), ("sell", 100_105)}
    assert second[("sell", 100_100)] == first[("sell", 100_100)] and second[("sell", 100_105)] == first[("sell", 100_105)]
    assert not set(second.values()) & {first[("buy", 99_900)], first[("buy", 99_895)]}

    # Only the second bid moves: the venue keeps the first (same price and amount, same order).
    gateway.reconcile(BTC, TICK, [(99_894.0, 0.2), (99_880.0, 0.4)], ASKS, stamps(3))
    await settle(client, gateway)
    third = quotes_by_price(venue, client)
    assert third[("buy", 99_894)] == second[("buy", 99_894)] and ("buy", 99_880) in third
    assert len(third) == 4 and len(gateway.open_orders(BTC)) == 4

    # Empty ladders (HALTED) pull both sides.
    assert gateway.reconcile(BTC, TICK, [], [], stamps(4)).quotes == 1
    await settle(client, gateway)
    assert resting(venue, client) == set() and gateway.open_orders(BTC) == []
    assert gateway.stats["errors_by_code"] == {} and gateway.stats["quote_levels_failed"] == 0
    assert gateway.stats["mass_quotes"] == 4


async def test_mass_quote_fills_and_the_protection_pull_and_refill(venue, mass_quoter, taker):
    client, gateway, recorder = mass_quoter
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(0))
    await settle(client, gateway)
    ioc = {"instrument_name": BTC, "time_in_force": "immediate_or_cancel"}

    # A partial fill: position and fill as for orders; the side is sent again in full.
    taken = await taker.call("private/sell", {**ioc, "amount": 0.15, "price": 99_900})
    await settle(client, gateway)
    [fill] = recorder.fills
    assert (fill.trade_id, fill.direction, fill.price, fill.amount) == (taken["fills"][0]["trade_id"], "buy",
                                                                         99_900, 0.15)
    assert fill.client_order_id is None and fill.order_sent_at is not None
    assert gateway.position(BTC) == pytest.approx(0.15)
    assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(1)).quotes == 1
    await settle(client, gateway)
    assert ("buy", 99_900, 0.2) in resting(venue, client)  # refreshed to its full size

    # 0.15 + 0.4 traded > trade_amount 0.5: the venue pulls every quote of the product.
    await taker.call("private/sell", {**ioc, "amount": 0.4, "price": 99_895})
    await settle(client, gateway)
    assert gateway.position(BTC) == pytest.approx(0.55) and len(recorder.fills) >= 2
    assert resting(venue, client) == set() and gateway.open_orders(BTC) == []
    assert gateway.stats["protection_pulls"] == 1
    assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(2)).quotes == 0  # paused until refilled
    assert gateway.stats["skipped_protection"] == 1

    # After mm_refill_delay_s the gateway refills, asks for a re-quote, and the next reconcile quotes.
    requotes = []
    gateway.on_requote = requotes.append
    await until(lambda: gateway.stats["protection_refills"] == 1)
    await settle(client, gateway)
    assert requotes == [BTC]
    assert venue.engine.protection[(connection(venue, client).session, PRODUCT)].remaining == pytest.approx(0.5)
    assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(3)).quotes == 1
    await settle(client, gateway)
    assert len(resting(venue, client)) == 4
    assert len({(f.trade_id, f.order_id) for f in recorder.fills}) == len(recorder.fills)
    assert gateway.stats["errors_by_code"] == {}


async def test_mass_quote_pre_trade_check_counts_the_side_being_replaced(venue, mass_quoter, taker):
    client, gateway, _ = mass_quoter
    requotes = []
    gateway.on_requote = requotes.append
    assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(0), max_position=1.0).skipped == 0
    await settle(client, gateway)
    assert requotes == []
    # Every level moves: until the venue reads the new bids, the old 0.6 can fill, then the new.
    # 0.6 + 0.6 > 1.0, so the new side's deepest level waits (each side: 0.6 + 0.2 fits).
    new_bids, new_asks = shifted(BIDS, -10), shifted(ASKS, 10)
    sent = gateway.reconcile(BTC, TICK, new_bids, new_asks, stamps(1), max_position=1.0)
    assert (sent.quotes, sent.skipped) == (1, 2) and gateway.stats["skipped_exposure"] == 2
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_890, 0.2), ("sell", 100_110, 0.2)}
    # Once the venue has read it the old sides are gone, and the gateway asks for a re-quote:
    # the rest of the ladder now fits (the resting 0.2 is kept, not replaced).
    assert requotes == [BTC]
    assert gateway.reconcile(BTC, TICK, new_bids, new_asks, stamps(2), max_position=1.0).skipped == 0
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_890, 0.2), ("buy", 99_885, 0.4),
                                      ("sell", 100_110, 0.2), ("sell", 100_115, 0.4)}
    # The taker sweeps every bid: the position stays within the limit.
    await taker.call("private/sell", {"instrument_name": BTC, "time_in_force": "immediate_or_cancel",
                                      "amount": 1.0, "price": 99_000})
    await settle(client, gateway)
    assert gateway.position(BTC) == pytest.approx(0.6) and requotes == [BTC]


async def test_mass_quote_refused_protection_stops_quoting_the_product(venue, keys):
    client = await open_client(venue, keys[0][QUOTER])
    gateway = OrderGateway(client, mass_quote=True, products={BTC: "FNOSUCH"})
    try:
        await gateway.start()
        await asyncio.sleep(0.3)
        assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(0)).quotes == 1
        await settle(client, gateway)
        assert gateway.stats["errors_by_code"][17] == 1  # UnknownProduct, on set_mm_protection
        assert resting(venue, client) == set()
        for i in range(3):  # not retried
            assert gateway.reconcile(BTC, TICK, shifted(BIDS, 10 * i), ASKS, stamps(i)).quotes == 0
        assert gateway.stats["skipped_protection"] == 3 and gateway.stats["mass_quotes"] == 1
    finally:
        await gateway.close()
        await client.close()
