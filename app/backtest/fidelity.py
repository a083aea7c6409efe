"""The fidelity check: a recorded live session's own orders replayed against the matching model, fills compared.

Contract (docs/architecture.md#d15-backtests-run-the-live-strategy-code, docs/operations.md#backtests)
- in: ``MarketData`` of a range (app/backtest/data.py) and the ``LiveSession`` of the same
  range: the instrument's ``order_acks`` and ``fills`` rows, from PostgreSQL
  (``load_session_postgres``) or a dataset directory (``load_session_parquet``: the
  ``order_acks.parquet`` and ``fills.parquet`` that ``cryptics record export`` writes).
- no strategy: the requests the live session sent are replayed as they reached the venue
  (``requests``): an insert at its ``create_time`` (the venue's clock), a cancel at its
  ``close_time`` (a client's cancel and the session's end alike), an amend at the first book
  notification between its ``order_sent_at`` and its ack that lists its old or new price (the
  venue published it then), else halfway between the two. Prices and amounts are the acks':
  an order the venue moved one tick inside the book (post-only) is replayed at the price it
  rested at. Orders inserted before the range are left out, with their fills.
- the market without us (``market_without_us``): the recorded book holds our own resting
  orders and the public trades our own fills (the venue published both).
  - Book: our resting amount at each price is known at every moment from the acks and the
    fills (``own_book``: an insert adds its remaining amount at its price, a fill takes its
    amount off, an amend moves it, a cancel removes it, each at the venue time above). Every
    recorded level is replaced by the recorded amount minus ours at that price then (never
    below 0); when ours changes at a moment with no book notification (an amend's estimated
    time), a level update of the corrected amount is inserted then.
  - Trades: each of our live fills is matched to one public trade of the same price and
    amount, the taker on the other side, within ``TRADE_MATCH_S`` of the fill's time
    (nearest first, each trade once). ``own_trades="taker_flow"`` (the default) keeps those
    trades as taker volume that reached our price: without us, the taker would have traded
    that amount with the next orders at that price or beyond, and a trade at or through our
    price is what fills us in the model; ``own_trades="removed"`` drops them (the taker's
    volume that hit us is then lost: the model can reproduce such a fill only from trades
    behind us or through our price). Either way the report counts them.
- ``check``: for each queue model, the replay (``replay_orders``), then ``compare``: each live
  fill is matched to a replayed fill of the same order within ``tolerance_s`` (nearest in time
  first, one to one); per model: live fills reproduced (count, and amount: the smaller of the
  two amounts of each matched pair over the live amount), replayed fills that did not happen
  live, mean time offset (replayed minus live), and every fill with what it was matched to.
- errors: ``DataError`` (one line) for a range with no orders of ours.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from app.backtest.data import BOOK, TRADE, DataError, MarketData, unix
from app.backtest.matching import EPSILON, QUEUE_MODELS, MatchingModel, queue_model

#: A public trade is one of our fills if it has the fill's price, amount and opposite side within this (seconds).
TRADE_MATCH_S = 0.002
#: A replayed fill reproduces a live fill of the same order within this many seconds (default).
DEFAULT_TOLERANCE_S = 1.0
OWN_TRADES = ("taker_flow", "removed")
LIVE_STATUSES = ("open", "partially_filled")
#: Two recorded venue times this close are one instant (both went through µs timestamps).
SAME_INSTANT_S = 2e-6

ACK_COLUMNS = ("time", "order_id", "instrument_name", "change_reason", "status", "direction", "price", "amount",
               "filled_amount", "remaining_amount", "delete_reason", "create_time", "close_time", "order_sent_at")
FILL_COLUMNS = ("time", "trade_id", "order_id", "instrument_name", "direction", "price", "amount")


@dataclass
class LiveSession:
    """The instrument's recorded acks and fills (dicts keyed by column, times as unix seconds)."""

    acks: list[dict]
    fills: list[dict]


@dataclass(frozen=True)
class Request:
    """One request of ours as it reached the venue."""

    time: float
    kind: str  # insert | amend | cancel
    order_id: str
    direction: str
    price: float
    amount: float
    #: How ``time`` was known: create_time, close_time, book (an amend seen in the book) or estimate.
    timed_by: str
    #: Live, the order rested after this request (an insert the venue cancelled at once did not).
    rested: bool = True


def _seconds(value: Any) -> Optional[float]:
    return None if value is None else unix(value)


def _normalise(rows: Sequence[dict], columns: Sequence[str]) -> list[dict]:
    out = []
    for row in rows:
        item = {c: row.get(c) for c in columns}
        for c in ("time", "create_time", "close_time", "order_sent_at"):
            if c in item:
                item[c] = _seconds(item[c])
        out.append(item)
    return out


async def load_session_postgres(database_url: str, instrument: str, start: float, end: float) -> LiveSession:
    import asyncpg

    lo, hi = datetime.fromtimestamp(start, tz=timezone.utc), datetime.fromtimestamp(end, tz=timezone.utc)
    connection = await asyncpg.connect(database_url)
    try:
        acks = await connection.fetch(
            f"SELECT {', '.join(ACK_COLUMNS)} FROM order_acks WHERE instrument_name = $1 AND time >= $2 AND time < $3 "
            "ORDER BY time", instrument, lo, hi)
        fills = await connection.fetch(
            f"SELECT {', '.join(FILL_COLUMNS)} FROM fills WHERE instrument_name = $1 AND time >= $2 AND time < $3 "
            "ORDER BY time, trade_id", instrument, lo, hi)
    finally:
        await connection.close()
    return LiveSession(_normalise([dict(r) for r in acks], ACK_COLUMNS), _normalise([dict(r) for r in fills],
                                                                                     FILL_COLUMNS))


def load_session_parquet(directory: Path, instrument: str, start: float, end: float) -> LiveSession:
    import pyarrow.parquet as pq

    out = []
    for table, columns in (("order_acks", ACK_COLUMNS), ("fills", FILL_COLUMNS)):
        path = Path(directory) / f"{table}.parquet"
        if not path.exists():
            raise DataError(f"{path}: missing (the fidelity check needs the recorded {table})")
        data = pq.read_table(path)
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise DataError(f"{path}: wrong shape: missing column(s) {', '.join(missing)} of table {table}")
        rows = _normalise([r for r in data.select(list(columns)).to_pylist() if r["instrument_name"] == instrument],
                          columns)
        out.append(sorted((r for r in rows if start <= r["time"] < end), key=lambda r: r["time"]))
    return LiveSession(*out)


# -- the requests and our own resting orders ----------------------------------------------------


def _book_times(data: MarketData) -> tuple[list[float], list[set]]:
    """The time of each book notification and the prices it lists (for timing amends)."""
    times, prices = [], []
    for event in data.events:
        if event[1] == BOOK:
            times.append(event[0])
            prices.append({p for p, _ in event[4]} | {p for p, _ in event[5]})
    return times, prices


def requests(session: LiveSession, data: Optional[MarketData] = None) -> list[Request]:
    """Our requests in venue-time order (see the module's contract for how each is timed)."""
    book_times, book_prices = _book_times(data) if data is not None else ([], [])
    by_order: dict[str, list[dict]] = defaultdict(list)
    for ack in session.acks:
        by_order[ack["order_id"]].append(ack)
    out: list[Request] = []
    for order_id, acks in by_order.items():
        acks.sort(key=lambda a: a["time"])
        insert = next((a for a in acks if a["change_reason"] == "insert"), None)
        if insert is None:
            continue  # inserted before the range: its state at the start is unknown
        out.append(Request(insert["create_time"], "insert", order_id, insert["direction"], float(insert["price"]),
                           float(insert["amount"]), "create_time", insert["status"] in LIVE_STATUSES))
        price, seen = float(insert["price"]), {insert["order_sent_at"]}
        for ack in acks:
            reason = ack["change_reason"]
            if reason == "amend" and ack["order_sent_at"] not in seen:
                seen.add(ack["order_sent_at"])  # the answer and session.orders report one amend twice
                new_price = float(ack["price"])
                at, timed_by = _amend_time(ack, {price, new_price}, book_times, book_prices)
                out.append(Request(at, "amend", order_id, ack["direction"], new_price, float(ack["amount"]), timed_by,
                                   ack["status"] in LIVE_STATUSES))
                price = new_price
            elif reason == "cancel" and ack["close_time"] is not None:
                out.append(Request(ack["close_time"], "cancel", order_id, ack["direction"], price,
                                   float(ack["amount"]), "close_time"))
                break
    out.sort(key=lambda r: r.time)
    return out


def _amend_time(ack: dict, prices: set, book_times: list[float], book_prices: list[set]) -> tuple[float, str]:
    sent, answered = ack["order_sent_at"], ack["time"]
    if sent is None:
        return answered, "estimate"
    i = bisect.bisect_left(book_times, sent)
    while i < len(book_times) and book_times[i] <= answered:
        if book_prices[i] & prices:
            return book_times[i], "book"
        i += 1
    return (sent + answered) / 2, "estimate"


def own_book(session: LiveSession, reqs: Sequence[Request]) -> list[tuple[float, str, float, float]]:
    """Changes of our live resting amount: ``(time, direction, price, change)`` in time order.

    Each order's state is followed through its requests and its fills (the fills table's
    exchange times); a request that left it resting moves its remaining amount."""
    fills_by_order: dict[str, list[dict]] = defaultdict(list)
    for fill in session.fills:
        fills_by_order[fill["order_id"]].append(fill)
    per_order: dict[str, list] = defaultdict(list)
    for r in reqs:
        per_order[r.order_id].append((r.time, 0, r))
    for order_id, fills in fills_by_order.items():
        if order_id in per_order:
            per_order[order_id].extend((f["time"], 1, f) for f in fills)
    changes: list[tuple[float, str, float, float]] = []
    for order_id, steps in per_order.items():
        steps.sort(key=lambda s: (s[0], s[1]))
        direction = steps[0][2].direction
        price, amount, filled, resting = math.nan, 0.0, 0.0, False
        for t, kind, item in steps:
            if kind == 1:  # a fill: our resting amount at the price shrinks by it
                fill = float(item["amount"])
                filled += fill
                if resting:
                    changes.append((t, direction, price, -min(fill, max(0.0, amount - filled + fill))))
                    if filled >= amount - EPSILON:
                        resting = False
                continue
            if resting:
                changes.append((t, direction, price, -max(0.0, amount - filled)))
                resting = False
            if item.kind == "cancel":
                break
            price, amount = item.price, item.amount
            if item.rested and amount - filled > EPSILON:
                changes.append((t, direction, price, amount - filled))
                resting = True
    changes.sort(key=lambda c: c[0])
    return changes


def own_trades_of(session: LiveSession, data: MarketData) -> dict[int, dict]:
    """Index in ``data.events`` of the public trade that is each of our fills → that fill."""
    trades_by_key: dict[tuple, list[tuple[float, int]]] = defaultdict(list)
    for i, event in enumerate(data.events):
        if event[1] == TRADE:
            trades_by_key[(event[3], round(event[4], 9), event[5])].append((event[0], i))
    taken: dict[int, dict] = {}
    for fill in session.fills:
        taker = "sell" if fill["direction"] == "buy" else "buy"
        candidates = trades_by_key.get((float(fill["price"]), round(float(fill["amount"]), 9), taker), ())
        best = None
        for t, i in candidates:
            if i not in taken and abs(t - fill["time"]) <= TRADE_MATCH_S and (
                    best is None or abs(t - fill["time"]) < abs(best[0] - fill["time"])):
                best = (t, i)
        if best is not None:
            taken[best[1]] = fill
    return taken


def market_without_us(data: MarketData, session: LiveSession, reqs: Sequence[Request],
                      own_trades: str = "taker_flow") -> tuple[list[tuple], dict]:
    """The recorded events with our own resting amounts out of the book levels and our own fills
    handled as ``own_trades`` says; returns the events and counters of what was changed."""
    if own_trades not in OWN_TRADES:
        raise ValueError(f"own_trades must be one of {', '.join(OWN_TRADES)}")
    changes = own_book(session, reqs)
    ours = own_trades_of(session, data)
    recorded: dict[str, dict[float, float]] = {"buy": {}, "sell": {}}
    own: dict[str, dict[float, float]] = {"buy": defaultdict(float), "sell": defaultdict(float)}
    out: list[tuple] = []
    stats = {"own_fills": len(session.fills), "own_trades_found": len(ours), "own_trades_removed": 0,
             "levels_corrected": 0, "synthetic_updates": 0}
    book_times = sorted(e[0] for e in data.events if e[1] == BOOK)

    def notified(t: float) -> bool:
        k = bisect.bisect_left(book_times, t - SAME_INSTANT_S)
        return k < len(book_times) and book_times[k] <= t + SAME_INSTANT_S
    j = 0

    def market(direction: str, price: float) -> float:
        return max(0.0, recorded[direction].get(price, 0.0) - own[direction].get(price, 0.0))

    for i, event in enumerate(data.events):
        t = event[0]
        while j < len(changes) and changes[j][0] <= t:
            ct, direction, price, change = changes[j]
            j += 1
            own[direction][price] = max(0.0, own[direction][price] + change)
            if not notified(ct) and price in recorded[direction]:
                # No notification shows this change: correct the level now.
                side = [(price, market(direction, price))]
                out.append((ct, BOOK, event[2], False, side if direction == "buy" else [],
                            side if direction == "sell" else []))
                stats["synthetic_updates"] += 1
        kind = event[1]
        if kind == BOOK:
            snapshot, bids, asks = event[3], event[4], event[5]
            sides = []
            for direction, levels in (("buy", bids), ("sell", asks)):
                book = recorded[direction]
                if snapshot:
                    book.clear()
                new = []
                for price, amount in levels:
                    if amount > 0:
                        book[price] = amount
                    else:
                        book.pop(price, None)
                    corrected = market(direction, price) if amount > 0 else 0.0
                    if corrected != amount:
                        stats["levels_corrected"] += 1
                    new.append((price, corrected))
                sides.append(new)
            out.append((t, BOOK, event[2], snapshot, sides[0], sides[1]))
        elif kind == TRADE and i in ours and own_trades == "removed":
            stats["own_trades_removed"] += 1
        else:
            out.append(event)
    return out, stats


# -- the replay and the comparison ----------------------------------------------------------------


def replay_orders(events: Sequence[tuple], reqs: Sequence[Request], queue, instrument: str) -> list[dict]:
    """Our requests against the matching model over ``events``; the replayed fills, each with
    the live ``order_id``. A request at the same instant as a market event goes first (the
    book notification of that instant shows its effect)."""
    venue = MatchingModel(queue, instrument)
    model_ids: dict[str, str] = {}
    fills: list[dict] = []
    k = 0
    for event in events:
        while k < len(reqs) and reqs[k].time <= event[0]:
            _send(venue, reqs[k], model_ids)
            k += 1
        kind = event[1]
        if kind == BOOK:
            venue.book(event[3], event[4], event[5])
        elif kind == TRADE:
            for order, amount in venue.trade(event[0], event[3], event[4], event[5]):
                fill = order.fills[-1]
                fills.append({"order_id": order.label, "time": fill["time"], "price": fill["price"],
                              "amount": amount, "direction": order.direction})
    return fills


def _send(venue: MatchingModel, request: Request, model_ids: dict[str, str]) -> None:
    if request.kind == "insert":
        # The live order_id rides in the label: replayed fills name the live order.
        order = venue.insert(request.time, None, request.direction, request.price, request.amount, request.order_id)
        model_ids[request.order_id] = order.order_id
        return
    model_id = model_ids.get(request.order_id)
    if model_id is None:
        return
    if request.kind == "amend":
        venue.amend(model_id, request.price, request.amount)
    else:
        venue.cancel(model_id)


def compare(live: Sequence[dict], replayed: Sequence[dict], tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Live fills against replayed fills: by order, then nearest in time within ``tolerance_s``."""
    live = sorted(({**f, "index": i} for i, f in enumerate(live)), key=lambda f: f["time"])
    replayed = sorted(({**f, "index": i} for i, f in enumerate(replayed)), key=lambda f: f["time"])
    by_order: dict[str, list[dict]] = defaultdict(list)
    for f in replayed:
        by_order[f["order_id"]].append(f)
    pairs: list[tuple[dict, dict]] = []
    used: set[int] = set()
    candidates = []
    for f in live:
        for r in by_order.get(f["order_id"], ()):
            dt = abs(r["time"] - f["time"])
            if dt <= tolerance_s:
                candidates.append((dt, f["index"], r["index"], f, r))
    matched_live: set[int] = set()
    for dt, li, ri, f, r in sorted(candidates, key=lambda c: c[:3]):
        if li in matched_live or ri in used:
            continue
        matched_live.add(li)
        used.add(ri)
        pairs.append((f, r))
    live_amount = sum(f["amount"] for f in live)
    reproduced_amount = sum(min(f["amount"], r["amount"]) for f, r in pairs)
    offsets = [r["time"] - f["time"] for f, r in pairs]
    partner = {f["index"]: r["index"] for f, r in pairs}
    return {
        "live_fills": len(live), "replayed_fills": len(replayed),
        "reproduced": len(pairs), "missed": len(live) - len(pairs),
        "extra": len(replayed) - len(pairs),
        "reproduced_share": len(pairs) / len(live) if live else None,
        "live_amount": live_amount, "reproduced_amount": reproduced_amount,
        "reproduced_amount_share": reproduced_amount / live_amount if live_amount else None,
        "extra_share": (len(replayed) - len(pairs)) / len(replayed) if replayed else None,
        "mean_offset_s": sum(offsets) / len(offsets) if offsets else None,
        #: live fill index → the replayed fill index it was matched to (None: missed).
        "matches": [partner.get(i) for i in range(len(live))],
    }


@dataclass
class FidelityReport:
    instrument: str
    start: float
    end: float
    own_trades: str
    tolerance_s: float
    live_fills: list[dict]
    requests: dict
    market: dict
    models: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"instrument": self.instrument, "start": self.start, "end": self.end, "own_trades": self.own_trades,
                "tolerance_s": self.tolerance_s, "requests": self.requests, "market": self.market,
                "live_fills": self.live_fills, "models": self.models}


def check(data: MarketData, session: LiveSession, *, own_trades: str = "taker_flow",
          tolerance_s: float = DEFAULT_TOLERANCE_S, models: Sequence[str] = tuple(QUEUE_MODELS)) -> FidelityReport:
    """Replay the session's requests over the market without us, for each queue model, and compare."""
    reqs = requests(session, data)
    if not reqs:
        raise DataError(f"no orders of ours for {data.instrument.name} in the range: nothing to replay "
                        "(the fidelity check needs a recorded live session's order_acks)")
    inserted = {r.order_id for r in reqs}
    live = [{"order_id": f["order_id"], "trade_id": f["trade_id"], "time": f["time"], "price": float(f["price"]),
             "amount": float(f["amount"]), "direction": f["direction"]}
            for f in session.fills if f["order_id"] in inserted]
    events, market_stats = market_without_us(data, session, reqs, own_trades)
    counts = defaultdict(int)
    for r in reqs:
        counts[r.kind] += 1
        counts[f"timed_by_{r.timed_by}"] += 1
    report = FidelityReport(data.instrument.name, data.start, data.end, own_trades, tolerance_s, live,
                            dict(counts) | {"fills_of_orders_before_the_range": len(session.fills) - len(live)},
                            market_stats)
    for name in models:
        replayed = replay_orders(events, reqs, queue_model(name), data.instrument.name)
        report.models[name] = {**compare(live, replayed, tolerance_s), "fills": replayed}
    return report


def table(report: FidelityReport) -> str:
    """One line per queue model: the comparison's figures."""
    columns = ("queue_model", "live", "replayed", "reproduced", "by_count", "by_amount", "not_live", "offset_ms")
    lines = ["  ".join(f"{c:>13}" for c in columns)]

    def pct(x: Optional[float]) -> str:
        return "—" if x is None else f"{100 * x:.1f}%"

    for name, m in report.models.items():
        offset = "—" if m["mean_offset_s"] is None else f"{m['mean_offset_s'] * 1e3:.1f}"
        cells = (name, m["live_fills"], m["replayed_fills"], m["reproduced"], pct(m["reproduced_share"]),
                 pct(m["reproduced_amount_share"]), pct(m["extra_share"]), offset)
        lines.append("  ".join(f"{str(c):>13}" for c in cells))
    return "\n".join(lines)
