"""The order gateway's order mode (insert, amend, cancel per order) against the simulated venue."""
from __future__ import annotations

import asyncio
import socket
import time

import fastavro
import pytest

from app.gateway import OrderGateway
from app.venue import Venue
from models.registry import record
from tests.integration.gateway.venue_setup import (
    ASKS,
    BIDS,
    BTC,
    QUOTER,
    TICK,
    config,
    connection,
    open_client,
    resting,
    settle,
    shifted,
    stamps,
    until,
)

pytestmark = pytest.mark.timeout(60)


async def test_start_sets_cancel_on_disconnect_and_orders_are_non_persistent(venue, quoter):
    client, gateway, _ = quoter
    conn = connection(venue, client)
    assert conn.cod_timeout == 6.0 and conn.session in venue.engine.cod_sessions
    assert conn.order_bucket.rate == 50  # the venue raised our rate: COD is on
    gateway.reconcile(BTC, TICK, BIDS[:1], [], stamps())
    await settle(client, gateway)
    [order] = venue.engine.open_orders(client.account)
    assert order["persistent"] is False and order["label"] == "P"


async def test_ladder_insert_amend_threshold_and_cancel(venue, quoter):
    client, gateway, recorder = quoter
    sent = gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps(0))
    assert sent[:3] == (4, 0, 0)
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_900, 0.2), ("buy", 99_895, 0.4),
                                      ("sell", 100_100, 0.2), ("sell", 100_105, 0.4)}
    venue_orders = {o["client_order_id"]: o for o in venue.engine.open_orders(client.account)}
    mine = gateway.open_orders(BTC)
    assert [(o.direction, o.level, o.status) for o in mine] == [("buy", 0, "open"), ("buy", 1, "open"),
                                                                ("sell", 0, "open"), ("sell", 1, "open")]
    assert {o.client_order_id: o.order_id for o in mine} == {c: o["order_id"] for c, o in venue_orders.items()}
    assert len(set(venue_orders)) == 4 and sorted(venue_orders) == list(range(min(venue_orders), min(venue_orders) + 4))
    assert all(o["label"] == "P" for o in venue_orders.values())
    # Every update received (4 answers + 4 feed items) became an Ack with the quote's stamps.
    assert len(recorder.acks) == 8
    for ack in recorder.acks:
        assert (ack.received_at, ack.quoted_at) == stamps(0)
        assert ack.order_sent_at is not None and ack.order_sent_at <= ack.ack_received_at

    # Within the amend threshold (5 ticks; exactly 5 is still within): nothing is sent.
    for ticks in (3, -5, 5):
        assert gateway.reconcile(BTC, TICK, shifted(BIDS, ticks), shifted(ASKS, ticks), stamps(1)) \
            == (0, 0, 0, 0, 0)
    await settle(client, gateway)
    assert gateway.stats["amends"] == 0 and len(recorder.acks) == 8
    assert {c: o["price"] for c, o in ((o["client_order_id"], o) for o in venue.engine.open_orders(client.account))} \
        == {c: o["price"] for c, o in venue_orders.items()}

    # Beyond it: each order is amended in place (same client_order_id and order_id, new price).
    assert (gateway.reconcile(BTC, TICK, shifted(BIDS, -6), shifted(ASKS, 6), stamps(2)))[:3] == (0, 4, 0)
    await settle(client, gateway)
    after = {o["client_order_id"]: o for o in venue.engine.open_orders(client.account)}
    assert set(after) == set(venue_orders)
    assert {c: o["order_id"] for c, o in after.items()} == {c: o["order_id"] for c, o in venue_orders.items()}
    assert resting(venue, client) == {("buy", 99_894, 0.2), ("buy", 99_889, 0.4),
                                      ("sell", 100_106, 0.2), ("sell", 100_111, 0.4)}
    amend_acks = [a for a in recorder.acks if a.change_reason == "amend"]
    assert len(amend_acks) == 8 and all((a.received_at, a.quoted_at) == stamps(2) for a in amend_acks)

    # A new amount is an amend too, even at the same price.
    resized = [(99_894.0, 0.3), (99_889.0, 0.4)]
    assert (gateway.reconcile(BTC, TICK, resized, shifted(ASKS, 6), stamps(3)))[:3] == (0, 1, 0)
    await settle(client, gateway)
    assert ("buy", 99_894, 0.3) in resting(venue, client)

    # Fewer levels: the extra orders are cancelled; the others stay as they are.
    assert (gateway.reconcile(BTC, TICK, resized[:1], shifted(ASKS, 6)[:1], stamps(4)))[:3] == (0, 0, 2)
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_894, 0.3), ("sell", 100_106, 0.2)}
    assert [(o.direction, o.level) for o in gateway.open_orders(BTC)] == [("buy", 0), ("sell", 0)]

    # Empty ladders (what a HALTED risk state sends) cancel everything of the instrument.
    gateway.reconcile(BTC, TICK, [], [], stamps(5))
    await settle(client, gateway)
    assert resting(venue, client) == set() and gateway.open_orders(BTC) == []
    assert gateway.stats["errors_by_code"] == {}


async def test_fills_position_and_no_duplicates(venue, quoter, taker):
    client, gateway, recorder = quoter
    quote = stamps(10)
    gateway.reconcile(BTC, TICK, BIDS[:1], ASKS[:1], quote)
    await settle(client, gateway)
    [bid] = [o for o in gateway.open_orders(BTC) if o.direction == "buy"]

    # The taker sells into our bid: a limit IOC at our price can only trade with us.
    ioc = {"instrument_name": BTC, "time_in_force": "immediate_or_cancel"}
    taken = await taker.call("private/sell", {**ioc, "amount": 0.15, "price": 99_900})
    assert taken["filled_amount"] == 0.15
    await settle(client, gateway)
    [fill] = recorder.fills
    assert (fill.trade_id, fill.order_id, fill.client_order_id) == (taken["fills"][0]["trade_id"], bid.order_id,
                                                                    bid.client_order_id)
    assert (fill.direction, fill.maker_taker, fill.price, fill.amount) == ("buy", "maker", 99_900, 0.15)
    assert fill.order_sent_at == bid.order_sent_at and fill.ack_received_at is not None
    assert gateway.position(BTC) == pytest.approx(0.15)
    [fill_ack] = [a for a in recorder.acks if a.change_reason == "fill"]
    assert (fill_ack.received_at, fill_ack.quoted_at, fill_ack.order_sent_at) == (*quote, bid.order_sent_at)
    assert fill_ack.status == "partially_filled" and [f.trade_id for f in fill_ack.fills] == [fill.trade_id]
    assert [o.status for o in gateway.open_orders(BTC) if o.direction == "buy"] == ["partially_filled"]

    # The same fill reported again (a fresh session.orders snapshot lists all fills): not a new fill.
    await client.resubscribe("session.orders")
    await settle(client, gateway)
    assert any(a.change_reason == "existing" for a in recorder.acks)
    assert len(recorder.fills) == 1 and gateway.stats["duplicate_fills"] >= 1
    assert gateway.position(BTC) == pytest.approx(0.15)

    # The rest of the bid fills: the level is free, and the next reconcile puts a new order there.
    await taker.call("private/sell", {**ioc, "amount": 0.05, "price": 99_900})
    await settle(client, gateway)
    assert len(recorder.fills) == 2 and gateway.position(BTC) == pytest.approx(0.2)
    assert [o.direction for o in gateway.open_orders(BTC)] == ["sell"]
    assert (gateway.reconcile(BTC, TICK, BIDS[:1], ASKS[:1], stamps(11)))[:3] == (1, 0, 0)
    await settle(client, gateway)
    [new_bid] = [o for o in gateway.open_orders(BTC) if o.direction == "buy"]
    assert new_bid.client_order_id > bid.client_order_id and new_bid.status == "open"

    # A buy into our ask takes the position back down (sells count negative).
    await taker.call("private/buy", {**ioc, "amount": 0.2, "price": 100_100})
    await settle(client, gateway)
    assert len(recorder.fills) == 3 and recorder.fills[-1].direction == "sell"
    assert gateway.position(BTC) == pytest.approx(0.0)
    assert len({(f.trade_id, f.order_id) for f in recorder.fills}) == 3
    # The keeper has each fill once: bought 0.2 at 99,900, sold 0.2 at 100,100: flat, +40 at any mark.
    assert gateway.positions.position(BTC) == 0.0 and gateway.positions.pnl(BTC, 123.0) == pytest.approx(40.0)
    # What the agent produces to Kafka: every Ack and Fill must fit the newest Avro schemas.
    for name, items in (("ack", recorder.acks), ("fill", recorder.fills)):
        schema = fastavro.parse_schema(record(name).schema)
        for item in items:
            assert fastavro.validation.validate(item.to_representation(), schema, raise_errors=True)


async def test_an_answer_arriving_after_a_fill_does_not_undo_it(venue, quoter, taker):
    """An amend, then at once a fill of the amended order. The gateway reads the amend's feed
    item and the fill's before its request task takes the amend's answer (here that is the
    usual order), and that answer says filled 0: it must not roll the order back."""
    client, gateway, recorder = quoter
    gateway.reconcile(BTC, TICK, [(99_900.0, 0.2)], [], stamps())
    await settle(client, gateway)
    for attempt in range(1, 4):
        price = 99_900.0 + 10 * attempt
        assert (gateway.reconcile(BTC, TICK, [(price, 0.2)], [], stamps(attempt)))[1] == 1
        await taker.call("private/sell", {"instrument_name": BTC, "time_in_force": "immediate_or_cancel",
                                          "amount": 0.05, "price": price})
        await settle(client, gateway)
        [order] = gateway.open_orders(BTC)
        assert (order.status, order.filled_amount, order.price) == ("partially_filled",
                                                                    pytest.approx(0.05 * attempt), price)
    assert gateway.position(BTC) == pytest.approx(0.15)
    assert resting(venue, client) == {("buy", 99_930, 0.05)}


async def test_a_burst_of_reconciles_stays_within_the_venue_rate(venue, fresh_quoter):
    """Right after start: the venue's bucket holds only the pre-COD burst (10), refilling at 50/s."""
    client, gateway, _ = fresh_quoter
    started = time.monotonic()
    for i in range(60):  # every reconcile moves the whole ladder 10 ticks: 4 amends (or inserts) wanted
        offset = 10 * (i % 2)
        gateway.reconcile(BTC, TICK, shifted(BIDS, -offset), shifted(ASKS, offset), stamps(i))
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    await settle(client, gateway)
    orders_sent = gateway.stats["inserts"] + gateway.stats["amends"]
    assert gateway.stats["errors_by_code"][4] == 0 and gateway.stats["throttled_venue"] == 0
    assert gateway.stats["throttled_local"] > 0  # the burst wanted far more than the rate allows ...
    assert orders_sent <= 10 + 50 * elapsed  # ... and the venue never saw more than it allows
    # ... while the gateway did use the COD rate (40/s locally; the pre-COD 8/s would fall short).
    assert orders_sent >= 8 + 15 * elapsed, (orders_sent, elapsed)
    assert len(resting(venue, client)) == 4


async def test_venue_throttle_backs_off(keys):
    """A gateway that believes in a higher cancel rate than the venue's (a wrong setting) meets
    error 4: it pauses its cancels, for longer each time, and the cancels still get through."""
    venue = Venue(config(keys[1], order_rate=10_000, order_rate_cod=10_000, cancel_rate=10))
    await venue.start()
    client = await open_client(venue, keys[0][QUOTER])
    gateway = OrderGateway(client, order_rate=10_000, order_rate_cod=10_000, throttle_backoff_s=1.0)
    try:
        await gateway.start()
        bids = [(99_000.0 - level, 0.001) for level in range(10)]
        asks = [(101_000.0 + level, 0.001) for level in range(10)]
        assert (gateway.reconcile(BTC, TICK, bids, asks, stamps(0)))[0] == 20
        await settle(client, gateway)
        assert len(resting(venue, client)) == 20
        # 20 cancels at once: the venue takes its burst of 10 and throttles the other 10.
        assert (gateway.reconcile(BTC, TICK, [], [], stamps(1)))[2] == 20
        await settle(client, gateway)
        throttled = gateway.stats["throttled_venue"]
        assert throttled >= 5 and gateway.stats["errors_by_code"][4] == throttled
        assert len(resting(venue, client)) == throttled  # the throttled ones are still there
        # Paused: no cancel goes out meanwhile. One pause for the whole burst, not one per reply.
        assert 0 < gateway.paused_for(cancels=True) <= 1.0 and gateway.paused_for() == 0
        assert (gateway.reconcile(BTC, TICK, [], [], stamps(2)))[2] == 0
        # Afterwards the cancels go out again, until none is left.
        deadline = time.monotonic() + 15
        while resting(venue, client) and time.monotonic() < deadline:
            gateway.reconcile(BTC, TICK, [], [], stamps(3))
            await asyncio.sleep(0.05)
        await settle(client, gateway)
        assert resting(venue, client) == set() and gateway.open_orders(BTC) == []
        assert gateway.stats["cancels"] >= 20 + throttled  # the throttled cancels were sent again, not dropped
    finally:
        await gateway.close()
        await client.close()
        await venue.stop()


async def test_refused_price_is_not_retried_blindly(venue, quoter):
    client, gateway, _ = quoter
    off_tick = [(99_900.5, 0.2)]
    assert (gateway.reconcile(BTC, TICK, off_tick, [], stamps(0)))[0] == 1
    await settle(client, gateway)
    assert gateway.stats["errors_by_code"] == {15: 1} and resting(venue, client) == set()
    assert gateway.open_orders(BTC) == []
    for i in range(3):  # the same target again: not sent again
        assert gateway.reconcile(BTC, TICK, off_tick, [], stamps(i)) == (0, 0, 0, 1, 0)
    await settle(client, gateway)
    assert gateway.stats["inserts"] == 1 and gateway.stats["skipped_failed"] == 3
    # A new target is tried.
    gateway.reconcile(BTC, TICK, [(99_900.0, 0.2)], [], stamps(4))
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_900, 0.2)}
    # An amend to a refused price leaves the order where it was, and is not repeated.
    gateway.reconcile(BTC, TICK, [(99_950.5, 0.2)], [], stamps(5))
    await settle(client, gateway)
    assert gateway.stats["errors_by_code"][15] == 2 and gateway.stats["amends"] == 1
    assert gateway.reconcile(BTC, TICK, [(99_950.5, 0.2)], [], stamps(6)) == (0, 0, 0, 1, 0)
    assert resting(venue, client) == {("buy", 99_900, 0.2)}
    [order] = gateway.open_orders(BTC)
    assert (order.price, order.target_price) == (99_900.0, 99_900.0)


async def test_post_only_orders_that_would_cross(venue, keys, quoter, taker):
    """Default: the venue moves a crossing post-only bid one tick under the best ask, and the
    gateway leaves it there (its target has not moved). With reject_post_only the venue
    cancels it instead, and the gateway does not send it again at that price."""
    client, gateway, _ = quoter
    await taker.call("private/insert", {"direction": "sell", "instrument_name": BTC, "amount": 0.1,
                                        "price": 99_950})
    gateway.reconcile(BTC, TICK, [(99_960.0, 0.2)], [], stamps())
    await settle(client, gateway)
    assert resting(venue, client) == {("buy", 99_949, 0.2)}
    [order] = gateway.open_orders(BTC)
    assert (order.price, order.target_price) == (99_949.0, 99_960.0)
    assert gateway.reconcile(BTC, TICK, [(99_960.0, 0.2)], [], stamps()) == (0, 0, 0, 0, 0)
    await gateway.close()

    other = await open_client(venue, keys[0][QUOTER])
    strict = OrderGateway(other, reject_post_only=True)
    try:
        await strict.start()
        await asyncio.sleep(0.2)  # past the first moments' 10-order budget
        assert (strict.reconcile(BTC, TICK, [(99_960.0, 0.2)], [], stamps()))[0] == 1
        await settle(other, strict)
        assert strict.stats["post_only_cancelled"] == 1 and strict.open_orders(BTC) == []
        assert strict.reconcile(BTC, TICK, [(99_960.0, 0.2)], [], stamps()) == (0, 0, 0, 1, 0)
        assert (strict.reconcile(BTC, TICK, [(99_940.0, 0.2)], [], stamps()))[0] == 1  # a new price is tried
        await settle(other, strict)
        assert resting(venue, other) == {("buy", 99_940, 0.2)}
    finally:
        await strict.close()
        await other.close()


async def test_close_cancels_the_session_orders(venue, quoter, taker):
    client, gateway, _ = quoter
    # An order of another session (here another account's) must survive our close.
    await taker.call("private/insert", {"direction": "buy", "instrument_name": BTC, "amount": 0.1,
                                        "price": 90_000})
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    assert len(resting(venue, client)) == 4
    await gateway.close()
    assert resting(venue, client) == set()
    assert len(venue.engine.open_orders(taker.account)) == 1
    assert client.connected.is_set()  # cancel_session keeps the socket
    assert gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps()) == (0, 0, 0, 0, 0)  # closed: sends nothing
    await client.call("public/system_info")
    assert gateway.open_orders(BTC) == []  # the venue's session_end updates arrived


async def test_dropped_connection_cancels_orders_and_the_new_session_has_cod(venue, quoter):
    client, gateway, _ = quoter
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    old = connection(venue, client)
    assert len(resting(venue, client)) == 4
    # Abruptly, as a crash or a cable pull would: shut the TCP socket under the websocket.
    client._socket.transport.underlying_transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    await until(lambda: resting(venue, client) == set())  # the venue deleted them: cancel-on-disconnect
    assert old.session not in venue.engine.cod_sessions
    await until(lambda: client.connected.is_set() and client.stats["reconnects"] >= 1)
    assert gateway.open_orders(BTC) == []
    new = connection(venue, client)
    assert new.session != old.session
    assert new.cod_timeout == 6.0 and new.session in venue.engine.cod_sessions  # set again before anything else
    assert gateway.stats["orphans_gone"] == 4  # the old orders, looked up by order_id: already deleted
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    assert len(resting(venue, client)) == 4
    assert all(o["persistent"] is False for o in venue.engine.open_orders(client.account))


async def test_nothing_is_sent_while_the_new_session_has_no_order_feed(venue, quoter, taker):
    """After a drop the client logs in, runs the session hooks (the gateway's reads the
    position), then resubscribes, public channels before private ones. A tick reconciled in
    between must place nothing: the order could fill before session.orders is subscribed
    again, and neither the position nor the fill records would ever have that fill."""
    client, gateway, recorder = quoter
    reopening = []

    async def tick_while_reopening(_client):
        # A hook after the gateway's: its position is read, session.orders is not subscribed.
        reopening.append(gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps()))
        reopening.append(resting(venue, client))

    client.add_session_hook(tick_while_reopening)
    client._socket.transport.underlying_transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    await until(lambda: client.connected.is_set() and client.stats["reconnects"] >= 1)
    assert reopening == [(0, 0, 0, 0, 0), set()]
    assert gateway.stats["skipped_not_connected"] == 1
    # Connected again: the next tick places the ladder, and a fill of it is seen.
    assert gateway.reconcile(BTC, TICK, BIDS[:1], ASKS[:1], stamps())[:3] == (2, 0, 0)
    await settle(client, gateway)
    taken = await taker.call("private/sell", {"instrument_name": BTC, "time_in_force": "immediate_or_cancel",
                                              "amount": 0.1, "price": BIDS[0][0]})
    assert taken["filled_amount"] == 0.1
    await settle(client, gateway)
    assert [f.trade_id for f in recorder.fills] == [taken["fills"][0]["trade_id"]]
    assert gateway.position(BTC) == pytest.approx(0.1)


async def test_reconcile_needs_start(venue, keys):
    client = await open_client(venue, keys[0][QUOTER])
    try:
        with pytest.raises(RuntimeError, match="start"):
            OrderGateway(client).reconcile(BTC, TICK, BIDS, ASKS)
        assert resting(venue, client) == set()
    finally:
        await client.close()
