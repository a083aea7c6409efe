"""The gateway ends the orders earlier sessions left open in the records, against the simulated venue
(app/gateway/leftovers.py, docs/architecture.md#d17-orders-that-end-with-a-session).

The records here are the acks a gateway handed over, folded per order as the `orders` table's
trigger folds them (a final state stays final; else the latest), taken when the new session
asks: what the table holds once the persistence has caught up. PostgreSQL and Kafka themselves
are in tests/integration/test_session_end_orders.py.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Optional

import pytest

from app.gateway import OrderGateway
from app.gateway.leftovers import RECONCILED, RecordedOrder
from app.trading.position import PositionKeeper
from tests.integration.gateway.venue_setup import (
    ASKS,
    BIDS,
    BTC,
    QUOTER,
    TICK,
    Recorder,
    open_client,
    resting,
    settle,
    stamps,
    until,
)

pytestmark = pytest.mark.timeout(60)

FINAL = ("filled", "cancelled", "cancelled_partially_filled")
IOC = {"instrument_name": BTC, "time_in_force": "immediate_or_cancel"}


class AckRecords:
    """OrderRecords over acks handed over by gateways, read when asked (after ``gate``, if given)."""

    def __init__(self, *recorders: Recorder, gate: Optional[asyncio.Event] = None,
                 fills_gate: Optional[asyncio.Event] = None) -> None:
        self.recorders, self.gate, self.fills_gate = recorders, gate, fills_gate
        self.frozen: Optional[list[RecordedOrder]] = None
        #: The fills recorded, (trade_id, time); read from the recorders while None.
        self.frozen_fills: Optional[set[tuple[str, float]]] = None
        self.asked = 0

    def fill_snapshot(self) -> set[tuple[str, float]]:
        return {(f.trade_id, f.time) for r in self.recorders for f in r.fills} | \
            {(f.trade_id, f.time) for r in self.recorders for a in r.acks for f in a.fills}

    def freeze(self) -> None:
        """The records stop here: what follows is never recorded."""
        self.frozen, self.frozen_fills = self.snapshot(), self.fill_snapshot()

    def snapshot(self) -> list[RecordedOrder]:
        latest = {}
        fills: dict[str, set[str]] = {}
        for recorder in self.recorders:
            for ack in recorder.acks:
                fills.setdefault(ack.order_id, set()).update(f.trade_id for f in ack.fills)
                known = latest.get(ack.order_id)
                if known is None or known.status not in FINAL:
                    latest[ack.order_id] = ack
        return [RecordedOrder(order_id=a.order_id, instrument_name=a.instrument_name, direction=a.direction,
                              order_type=a.order_type, time_in_force=a.time_in_force, price=a.price, amount=a.amount,
                              filled_amount=a.filled_amount, insert_reason=a.insert_reason, persistent=a.persistent,
                              create_time=a.create_time, label=a.label, client_order_id=a.client_order_id,
                              recorded_trade_ids=frozenset(fills[a.order_id]))
                for a in latest.values() if a.status not in FINAL]

    async def open_orders(self, label: str) -> list[RecordedOrder]:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        orders = self.frozen if self.frozen is not None else self.snapshot()
        return [o for o in orders if o.label == label]

    async def recorded_fills(self, lookback: float) -> tuple[Optional[float], frozenset[str]]:
        if self.fills_gate is not None:
            await self.fills_gate.wait()
        fills = self.frozen_fills if self.frozen_fills is not None else self.fill_snapshot()
        if not fills:
            return None, frozenset()
        newest = max(t for _, t in fills)
        return newest, frozenset(trade_id for trade_id, t in fills if t >= newest - lookback)


async def second_session(venue, keys, records) -> tuple:
    """A new session of the quoter's account (a standby taking over) with ``records``."""
    client = await open_client(venue, keys[0][QUOTER])
    recorder = Recorder()
    gateway = OrderGateway(client, on_ack=recorder.acks.append, on_fill=recorder.fills.append,
                           positions=PositionKeeper(), records=records)
    await gateway.start()
    return client, gateway, recorder


async def test_a_new_session_ends_earlier_orders_as_the_venue_says(venue, keys, quoter, taker):
    client, gateway, recorder = quoter
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    records = AckRecords(recorder)
    records.freeze()
    assert len(records.frozen) == 4
    # Fills the records never see: the best bid fills completely, the best ask partly.
    full = await taker.call("private/sell", {**IOC, "amount": 0.2, "price": BIDS[0][0]})
    part = await taker.call("private/buy", {**IOC, "amount": 0.05, "price": ASKS[0][0]})
    await settle(client, gateway)
    assert len(resting(venue, client)) == 3  # the first session still holds three (its socket is up)

    client2, gateway2, recorder2 = await second_session(venue, keys, records)
    try:
        await until(lambda: gateway2.stats["leftover_checks"] == 1)
        by_order = {a.order_id: a for a in recorder2.acks}
        [filled_id] = [o.order_id for o in records.frozen if o.direction == "buy" and o.price == BIDS[0][0]]
        [part_id] = [o.order_id for o in records.frozen if o.direction == "sell" and o.price == ASKS[0][0]]
        # gone from the venue, filled there: ended filled, not cancelled, with its fill
        ended = by_order[filled_id]
        assert (ended.change_reason, ended.status, ended.delete_reason) == (RECONCILED, "filled", "filled")
        assert (ended.filled_amount, ended.remaining_amount) == (0.2, 0.0) and ended.order_sent_at is None
        # still resting under the first session: cancelled by id, the venue's answer recorded
        cancelled = {o: a for o, a in by_order.items() if o != filled_id}
        assert len(cancelled) == 3 and all(a.change_reason == "cancel" for a in cancelled.values())
        assert cancelled[part_id].status == "cancelled_partially_filled"
        assert not resting(venue, client2)
        # the fills the records lacked, once each; not added to the new session's position
        assert sorted((f.order_id, f.trade_id, f.amount) for f in recorder2.fills) == sorted(
            [(filled_id, full["fills"][0]["trade_id"], 0.2), (part_id, part["fills"][0]["trade_id"], 0.05)])
        assert gateway2.position(BTC) == pytest.approx(0.2 - 0.05)  # the portfolio it started from
        assert (gateway2.stats["leftovers_filled"], gateway2.stats["leftovers_cancelled"],
                gateway2.stats["leftovers_resting"], gateway2.stats["leftover_fills"]) == (1, 0, 3, 2)
        assert gateway2.stats["lost_fills"] == 0  # the trade history's fills were its orders' (recorded once)
    finally:
        await gateway2.close()
        await client2.close()


async def test_fills_of_orders_the_records_never_saw_are_recorded_from_the_trade_history(venue, keys, quoter, taker):
    client, gateway, recorder = quoter
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    early = await taker.call("private/sell", {**IOC, "amount": 0.1, "price": BIDS[0][0]})
    await settle(client, gateway)
    records = AckRecords(recorder)
    records.freeze()  # the acks are recorded, with the fill of the first trade
    records.frozen = []  # ...but none of the orders is open in them: as if their acks had been lost
    assert {t for t, _ in records.frozen_fills} == {early["fills"][0]["trade_id"]}
    # A fill nobody records (the worker dies before it hands it on), on an order nobody recorded open.
    lost = await taker.call("private/buy", {**IOC, "amount": 0.05, "price": ASKS[0][0]})
    await settle(client, gateway)

    client2, gateway2, recorder2 = await second_session(venue, keys, records)
    try:
        await until(lambda: gateway2.stats["leftover_checks"] == 1)
        [fill] = recorder2.fills  # the lost one only: the first trade is recorded already
        assert (fill.trade_id, fill.amount, fill.direction) == (lost["fills"][0]["trade_id"], 0.05, "sell")
        assert fill.order_id == next(f.order_id for f in recorder.fills if f.trade_id == fill.trade_id)
        assert fill.maker_taker == "maker" and fill.price == ASKS[0][0] and fill.time is not None
        assert gateway2.stats["lost_fills"] == 1 and gateway2.stats["leftover_fills"] == 0
        assert gateway2.position(BTC) == pytest.approx(0.1 - 0.05)  # from the portfolio, not added again
    finally:
        await gateway2.close()
        await client2.close()


async def test_a_sessions_own_orders_are_left_to_their_own_reports(venue, keys):
    gate = asyncio.Event()
    records = AckRecords(gate=gate)
    client, gateway, recorder = await second_session(venue, keys, records)
    records.recorders = (recorder,)
    try:
        await asyncio.sleep(0.5)  # the new session's first moments allow 10 orders only
        gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
        await settle(client, gateway)
        records.frozen = records.snapshot()  # four of its own orders open in the records
        gateway.reconcile(BTC, TICK, BIDS[:1], ASKS[:1], stamps())  # it cancels two itself
        await settle(client, gateway)
        gate.set()
        await until(lambda: gateway.stats["leftover_checks"] == 1)
        assert len(records.frozen) == 4
        assert not [a for a in recorder.acks if a.change_reason == RECONCILED]
        assert len(resting(venue, client)) == 2
    finally:
        await gateway.close()
        await client.close()


async def test_a_fill_of_this_session_during_the_check_is_no_lost_fill(venue, keys, taker):
    """The session's own orders are told apart as of the trade history's answer: an order placed
    and filled while the check waits for the records is this session's, reported once."""
    fills_gate = asyncio.Event()
    records = AckRecords(fills_gate=fills_gate)
    client, gateway, recorder = await second_session(venue, keys, records)
    records.recorders = (recorder,)
    records.frozen_fills = set()  # the records hold none of this session's fills yet
    try:
        await until(lambda: records.asked == 1)  # the check is on its way, waiting for the fills
        await asyncio.sleep(0.5)  # the new session's first moments allow 10 orders only
        gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
        await settle(client, gateway)
        sold = await taker.call("private/sell", {**IOC, "amount": 0.1, "price": BIDS[0][0]})
        await until(lambda: len(recorder.fills) == 1)
        fills_gate.set()
        await until(lambda: gateway.stats["leftover_checks"] == 1)
        assert [f.trade_id for f in recorder.fills] == [sold["fills"][0]["trade_id"]]
        assert gateway.stats["lost_fills"] == 0
    finally:
        await gateway.close()
        await client.close()


async def test_after_a_reconnect_the_new_session_ends_the_orders_the_drop_deleted(venue, keys):
    records = AckRecords()
    client, gateway, recorder = await second_session(venue, keys, records)
    records.recorders = (recorder,)
    try:
        await until(lambda: gateway.stats["leftover_checks"] == 1)  # nothing open yet
        await asyncio.sleep(0.5)
        gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
        await settle(client, gateway)
        ids = {a.order_id for a in recorder.acks}
        assert len(ids) == 4
        client._socket.transport.underlying_transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        await until(lambda: resting(venue, client) == set())  # cancel-on-disconnect; no report reached us
        await until(lambda: gateway.stats["leftover_checks"] == 2)
        ended = {a.order_id: a for a in recorder.acks if a.change_reason == RECONCILED}
        assert set(ended) == ids
        assert {(a.status, a.delete_reason) for a in ended.values()} == {("cancelled", "session_end")}
        assert gateway.stats["orphans_gone"] == 4 and gateway.stats["leftovers_cancelled"] == 4
    finally:
        await gateway.close()
        await client.close()


async def test_close_returns_with_the_ending_of_every_order_of_the_session(venue, quoter):
    client, gateway, recorder = quoter
    gateway.reconcile(BTC, TICK, BIDS, ASKS, stamps())
    await settle(client, gateway)
    gateway.reconcile(BTC, TICK, BIDS, [(a[0] + 10 * TICK, a[1]) for a in ASKS], stamps())  # amends in flight
    await gateway.close()
    # No round trip after close: the venue's reports of what cancel_session deleted are in when it
    # returns. (The simulated venue sends them before any later answer, so this cannot show the
    # wait itself; tests/unit/test_gateway_leftovers.py has its logic.)
    ids = {a.order_id for a in recorder.acks}
    ended = {a.order_id: a for a in recorder.acks if a.status == "cancelled"}
    assert len(ids) == 4 and set(ended) == ids
    assert {(a.change_reason, a.delete_reason) for a in ended.values()} == {("cancel", "session_end")}
    assert gateway.stats["final_reports_missing"] == 0 and not resting(venue, client)
