"""Orders an earlier session left open in our records: which ones, and the status that closes each.

When a venue session ends without its own final reports reaching the records (the worker
killed with -9, the connection dropped, a standby taking over), the venue deletes the
session's orders (cancel-on-disconnect, docs/thalex-protocol.md §6.3) and tells nobody: the
venue sends a new session nothing about an old session's orders, and Thalex keeps no history
of a cancelled, never-filled order of a cancel-on-disconnect session (§4.1). The `orders`
table would show them open for ever. So when a session opens, the gateway compares what the
records say is open with what the venue holds, and writes the ending of every order that is
gone (docs/architecture.md#d17-orders-that-end-with-a-session). This module is the pure part:
no socket, no database.

- ``RecordedOrder``: one order the records (the `orders` table) say is open, with the trade
  ids of its fills already recorded (the `fills` table).
- ``split_leftovers``: of those, the ones the venue no longer holds (gone) and the ones it
  still holds (an earlier session's orders the venue has not deleted yet), leaving out this
  session's own orders.
- ``closing_status``: the OrderStatus (docs/thalex-protocol.md §4.10) that closes a gone order,
  from the venue's trade history of it: filled if the trades add up to its amount, else
  cancelled (partially filled if it has fills), with the trades not yet recorded as its
  fills. ``change_reason`` is ``reconciled`` (ours, not the venue's: the row was inferred, not
  reported), ``delete_reason`` the venue's own word for the ending, ``session_end`` or ``filled``.
- ``unrecorded_fills``: the trades of an order whose fill is not in the records yet.
- ``unrecorded_trades``: trades of our label that are in no recorded fill at all: the fills a
  session killed with -9 had read from the venue but not handed to Kafka yet, or that the venue
  made in the moment before it saw the session go. The order may be missing from the records
  too (its ack was in the same lost buffer), so these are found from the trade history, not
  from the orders.
- ``OrderRecords``: what the gateway asks the records (app/pipeline/order_records.py has the one
  over PostgreSQL and Kafka).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

from app.exchange.protocol import CANCELLED, CANCELLED_PARTIALLY_FILLED, FILLED

#: The change_reason of a status the gateway inferred when a session opened (the venue never
#: sends it): an order that ended with an earlier session, whose ending was not recorded.
RECONCILED = "reconciled"
#: Thalex's delete reason for the orders of a session that ended (cancel-on-disconnect or
#: cancel_session, docs/thalex-protocol.md §6.3), and for an order filled completely.
SESSION_END = "session_end"
FILLED_REASON = "filled"
#: Relative tolerance when comparing a sum of fill amounts with an order's amount.
AMOUNT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class RecordedOrder:
    """An order the records say is open: its row in `orders`, and the trade ids its recorded fills carry."""

    order_id: str
    instrument_name: str
    direction: str
    order_type: str
    time_in_force: str
    price: Optional[float]
    amount: float
    filled_amount: float
    insert_reason: str
    persistent: bool
    #: Exchange time of the order's creation, unix seconds.
    create_time: float
    label: Optional[str] = None
    client_order_id: Optional[int] = None
    recorded_trade_ids: frozenset[str] = field(default_factory=frozenset)


class OrderRecords(Protocol):
    """The records of our orders, as the gateway reads them when a session opens."""

    async def open_orders(self, label: str) -> list[RecordedOrder]:
        """The orders with ``label`` that the records say are open, once the records hold every
        order update published before the call (an update on its way would otherwise open an
        order again after its ending was written)."""

    async def recorded_fills(self, lookback: float) -> tuple[Optional[float], frozenset[str]]:
        """(the time of the newest recorded fill or None, the trade ids of the recorded fills from
        ``lookback`` seconds before it on). Asked after ``open_orders``, so as complete as it."""


def split_leftovers(recorded: Iterable[RecordedOrder], resting: Iterable[str],
                    this_session: Iterable[str]) -> tuple[list[RecordedOrder], list[RecordedOrder]]:
    """(gone, still resting): the recorded open orders that are not this session's, split by
    whether the venue still holds them (``resting``: the order_ids of private/open_orders).

    ``this_session``: every order_id this session has had a status for since it opened. Its
    orders are its own to report: one the venue no longer holds has its final report on the
    way, and writing an inferred ending too could misstate it (a cancel as a session end)."""
    resting, own = set(resting), set(this_session)
    gone, still_resting = [], []
    for order in recorded:
        if order.order_id in own:
            continue
        (still_resting if order.order_id in resting else gone).append(order)
    return gone, still_resting


def trades_by_order(trades: Iterable[Any], order_ids: Iterable[str]) -> dict[str, list[dict]]:
    """The trades (account Trade records, docs/thalex-protocol.md §4.11) of each of ``order_ids``,
    in the order given; anything that is not a trade of one of them is left out."""
    wanted = set(order_ids)
    out: dict[str, list[dict]] = {order_id: [] for order_id in wanted}
    for trade in trades:
        if isinstance(trade, dict) and str(trade.get("order_id")) in wanted:
            out[str(trade["order_id"])].append(trade)
    return out


def unrecorded_fills(order: RecordedOrder, trades: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The trades of ``order`` not yet among its recorded fills, as OrderFill objects (§4.10),
    each trade id once (a trade is one fill of one order)."""
    fills, seen = [], set(order.recorded_trade_ids)
    for trade in trades:
        trade_id = str(trade["trade_id"])
        if trade_id in seen:
            continue
        seen.add(trade_id)
        fills.append({"trade_id": trade_id, "price": float(trade["price"]), "amount": float(trade["amount"]),
                      "maker_taker": trade["maker_taker"], "leg_index": int(trade.get("leg_index", 0)),
                      "time": trade.get("time")})
    return fills


def closing_status(order: RecordedOrder, trades: Sequence[Mapping[str, Any]]) -> dict:
    """The OrderStatus that ends ``order``, gone from the venue, given its trades from the
    venue's trade history (all of them; any order).

    The filled amount is what the trades add up to, or what the records had if that is more
    (a trade history that lags, docs/thalex-protocol.md §4.9). An order filled to its amount is
    ``filled``; any other was deleted with its session: ``cancelled``, or
    ``cancelled_partially_filled`` when something filled. ``close_time`` is the last fill's
    time for a filled order, and unknown (None) for a deleted one: the venue does not say
    when it deleted it."""
    filled_by_trades = sum(float(t["amount"]) for t in {str(t["trade_id"]): t for t in trades}.values())
    filled = max(order.filled_amount, filled_by_trades)
    complete = filled >= order.amount * (1 - AMOUNT_TOLERANCE)
    if complete:
        status, delete_reason = FILLED, FILLED_REASON
        times = [float(t["time"]) for t in trades if isinstance(t.get("time"), (int, float))]
        close_time: Optional[float] = max(times) if times else None
    else:
        status = CANCELLED_PARTIALLY_FILLED if filled > 0 else CANCELLED
        delete_reason, close_time = SESSION_END, None
    out: dict[str, Any] = {
        "order_id": order.order_id,
        "order_type": order.order_type,
        "time_in_force": order.time_in_force,
        "instrument_name": order.instrument_name,
        "direction": order.direction,
        "amount": order.amount,
        "filled_amount": order.amount if complete else filled,
        "remaining_amount": 0.0,
        "status": status,
        "fills": unrecorded_fills(order, trades),
        "change_reason": RECONCILED,
        "delete_reason": delete_reason,
        "insert_reason": order.insert_reason,
        "create_time": order.create_time,
        "close_time": close_time,
        "persistent": order.persistent,
    }
    if order.price is not None:
        out["price"] = order.price
    if order.label is not None:
        out["label"] = order.label
    if order.client_order_id is not None:
        out["client_order_id"] = order.client_order_id
    return out


def unrecorded_trades(trades: Iterable[Any], recorded_trade_ids: Iterable[str],
                      skip_orders: Iterable[str]) -> list[dict]:
    """The trades (docs/thalex-protocol.md §4.11) whose trade id is in no recorded fill, leaving
    out the orders of ``skip_orders`` (this session's own, whose fills it reports itself, and
    those whose fills were just recorded another way); each trade id once, in the order given."""
    seen, skip = set(recorded_trade_ids), set(skip_orders)
    out = []
    for trade in trades:
        if not isinstance(trade, dict) or trade.get("trade_id") is None or str(trade.get("order_id")) in skip:
            continue
        trade_id = str(trade["trade_id"])
        if trade_id in seen:
            continue
        seen.add(trade_id)
        out.append(trade)
    return out
