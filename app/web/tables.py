"""The table views' pure parts: paging, cursors, window selection, rounding, JSON values. No Faust.

agents/table_views.py serves ``GET /tables/``, ``GET /tables/{name}/`` and
``GET /tables/{name}/{key}/`` (docs/architecture.md#d12-web-views); everything here is what
those views compute without a table, a router or a socket, so that it is tested on its own
(tests/unit/test_web_tables.py).

Paging. The entries of a table are ordered by their *position*: the key's text, then (for a
windowed table) the window's start. A page is the first ``limit`` entries after a position;
the cursor is that position, with the table's name, as opaque URL-safe text. A position is
stable as entries come and go (keyset paging), so a cursor stays valid across pages, and
the pages of several workers merge: each worker returns its first ``limit`` entries after
the cursor; the merged page is the first ``limit`` of their union (``merge``).

Windows (``?window=``), as Faust's WindowSet defines them (faust/tables/wrappers.py), relative
to the wall clock of the worker answering: ``now`` the earliest window holding the time
(``WindowSet.now``), ``current`` the window ``Window.current`` gives for it, ``delta:60s``
the window holding 60 s ago (``WindowSet.delta``; units s, m, h), ``series`` every live
window of the key, oldest first (live: not yet stale by the window's expiry, which Faust's
table clean-up deletes). For a tumbling window ``now`` and ``current`` are the same window.

Rounding. Prices and sizes are rounded to the instrument's steps (its ``tick_size`` and
``volume_tick_size`` from public/instruments); the fields concerned are listed per table in
``ROUNDED_FIELDS``, every other field is left as it is (PnL, fees, notional, sums of spreads,
times, counts). Three kinds:

- ``PRICE``: a price on the tick grid (trades, orders, fills): the nearest multiple of the tick;
- ``SIZE``: an amount on the volume grid (positions, order and fill amounts, volumes, sums of
  them): the nearest multiple of the volume tick;
- ``DERIVED``: a price that is not on the grid (marks, mids, the average entry): to a
  hundredth of a tick (the tick's decimals plus two), which drops float noise without moving
  the price onto a grid it is not on.

An instrument whose steps the worker does not know (an index key such as ``BTCUSD``) keeps
its numbers unrounded.

Summaries. A latency histogram (``stage_latency_1m``'s values, schemas/latency_histogram/v1.avsc)
also carries ``summary``: count, mean, p50, p90, p99 and max in µs, as LogHistogram.summary()
computes them from the buckets (``summarized``), so that a reader (the inspector's charts) needs
no copy of the bucket arithmetic.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any, Iterable, Mapping, Optional, Sequence

from aiokafka.partitioner import DefaultPartitioner

from app.analytics.histogram import LogHistogram

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Seconds a worker waits for each peer it asks (``?timeout=`` overrides, up to MAX_TIMEOUT).
PEER_TIMEOUT = 2.0
MAX_TIMEOUT = 30.0
MAX_CURSOR = 4096

#: A position: the key's text and the window's start (None for a table without windows).
Position = tuple[str, Optional[float]]


class BadRequest(ValueError):
    """A query parameter the views refuse (HTTP 400)."""


# -- query parameters ----------------------------------------------------------------------


def parse_limit(raw: Optional[str]) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,7}", raw):
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    limit = int(raw)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return limit


def parse_timeout(raw: Optional[str]) -> float:
    if raw is None or raw == "":
        return PEER_TIMEOUT
    try:
        timeout = float(raw)
    except ValueError:
        raise BadRequest(f"timeout must be a number of seconds, got {raw!r}") from None
    if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise BadRequest(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} s, got {raw!r}")
    return timeout


def parse_flag(raw: Optional[str]) -> bool:
    """``?local=1``: true for 1, true, yes, on (any case); absent or anything else is false."""
    return raw is not None and raw.strip().lower() in ("1", "true", "yes", "on")


# -- keys, positions and cursors -------------------------------------------------------------


def key_text(key: Any) -> str:
    """A table key as the views show and order it: a string as it is, anything else as JSON."""
    return key if isinstance(key, str) else json.dumps(plain(key), sort_keys=True)


def encode_cursor(table: str, position: Position) -> str:
    raw = json.dumps({"t": table, "p": list(position)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(table: str, raw: Optional[str]) -> Optional[Position]:
    """The position a cursor of ``table`` stands for; None without a cursor; BadRequest otherwise."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_CURSOR:
        raise BadRequest("cursor too long: pass back the next_cursor of a previous page")
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("not a cursor of these views: pass back the next_cursor of a previous page") from None
    position = data.get("p") if isinstance(data, dict) else None
    if (not isinstance(position, list) or len(position) != 2 or not isinstance(position[0], str)
            or not (position[1] is None or _number(position[1]))):
        raise BadRequest("not a cursor of these views: pass back the next_cursor of a previous page")
    if data.get("t") != table:
        raise BadRequest(f"that cursor belongs to another table ({data.get('t')!r}), not {table!r}")
    return position[0], None if position[1] is None else float(position[1])


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- entries and pages -----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One stored value: its key, its window (start, end) for a windowed table, the value."""

    key: Any
    window: Optional[tuple[float, float]]
    value: Any

    @property
    def position(self) -> Position:
        return key_text(self.key), None if self.window is None else self.window[0]


def entries(items: Iterable[tuple[Any, Any]], windowed: bool) -> list[Entry]:
    """The table's stored items as entries: a windowed table stores ``(key, (start, end))``."""
    out = []
    for stored, value in items:
        if not windowed:
            out.append(Entry(stored, None, value))
            continue
        try:
            key, (start, end) = stored
            out.append(Entry(key, (float(start), float(end)), value))
        except (TypeError, ValueError):
            continue  # no (key, window) key: nothing a windowed view can place
    return out


def _sort_key(position: Position) -> tuple[str, float]:
    return position[0], -math.inf if position[1] is None else position[1]


def page(items: Iterable[Entry], *, prefix: str = "", after: Optional[Position] = None,
         limit: int = DEFAULT_LIMIT) -> tuple[list[Entry], bool]:
    """The first ``limit`` entries after ``after`` whose key text starts with ``prefix``, in
    position order, and whether more follow."""
    chosen = [e for e in items if e.position[0].startswith(prefix)]
    if after is not None:
        floor = _sort_key(after)
        chosen = [e for e in chosen if _sort_key(e.position) > floor]
    chosen.sort(key=lambda e: _sort_key(e.position))
    return chosen[:limit], len(chosen) > limit


def valid_item(item: Any) -> bool:
    """True for an item of a peer's page this worker can merge: an object with a position."""
    if not isinstance(item, dict):
        return False
    position = item.get("position")
    return (isinstance(position, list) and len(position) == 2 and isinstance(position[0], str)
            and (position[1] is None or _number(position[1])))


def merge(pages: Sequence[tuple[list[dict], bool]], limit: int) -> tuple[list[dict], bool]:
    """Several workers' pages of one table (items with a ``position``, and whether each had
    more) as one page: the first ``limit`` items of their union, and whether more follow.
    An entry two workers both still hold (a partition moving) is kept once, the first page's."""
    seen: dict[tuple, dict] = {}
    more = False
    for items, has_more in pages:
        more = more or has_more
        for item in items:
            seen.setdefault(tuple(item["position"]), item)
    ordered = sorted(seen.values(), key=lambda item: _sort_key(tuple(item["position"])))
    return ordered[:limit], more or len(ordered) > limit


# -- windows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowChoice:
    """``?window=``: ``kind`` is now, current, delta or series; ``delta`` seconds for delta."""

    kind: str
    delta: float = 0.0

    @property
    def text(self) -> str:
        return f"delta:{self.delta:g}s" if self.kind == "delta" else self.kind


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DELTA = re.compile(r"delta:([0-9]{1,9}(?:\.[0-9]{1,6})?)([smh]?)")


def parse_window(raw: Optional[str]) -> WindowChoice:
    """``now`` (the default), ``current``, ``series`` or ``delta:<n>[s|m|h]``."""
    if raw is None or raw == "":
        return WindowChoice("now")
    if raw in ("now", "current", "series"):
        return WindowChoice(raw)
    match = _DELTA.fullmatch(raw)
    if match is None:
        raise BadRequest(f"window must be now, current, series or delta:<seconds>[s|m|h] (delta:60s), got {raw!r}")
    return WindowChoice("delta", float(match.group(1)) * _UNITS[match.group(2) or "s"])


def chosen_range(choice: WindowChoice, window: Any, now: float) -> tuple[float, float]:
    """The (start, end) ``choice`` picks at ``now``, by Faust's window methods (WindowSet's
    ``now`` is ``window.earliest``, ``current`` is ``window.current``, ``delta`` is
    ``window.delta``). ``window`` is a faust.windows window; only its methods are used."""
    if choice.kind == "now":
        start, end = window.earliest(now)
    elif choice.kind == "current":
        start, end = window.current(now)
    elif choice.kind == "delta":
        start, end = window.delta(now, choice.delta)
    else:
        raise ValueError(f"a single window, not {choice.kind}")
    return float(start), float(end)


def find_window(key_entries: Iterable[Entry], chosen: tuple[float, float]) -> Optional[Entry]:
    """The entry whose window starts where ``chosen`` does (the stored floats went through JSON)."""
    for entry in key_entries:
        if entry.window is not None and math.isclose(entry.window[0], chosen[0], rel_tol=0, abs_tol=1e-6):
            return entry
    return None


def in_window(items: Iterable[Entry], chosen: tuple[float, float]) -> list[Entry]:
    """The entries whose window starts where ``chosen`` does: one per key (a listing's ``?window=``)."""
    return [e for e in items if e.window is not None
            and math.isclose(e.window[0], chosen[0], rel_tol=0, abs_tol=1e-6)]


def live_series(key_entries: Iterable[Entry], window: Any, now: float) -> list[Entry]:
    """Every window of one key that is still live at ``now`` (``window.stale`` of its end, as
    Faust's table clean-up judges it), oldest first."""
    return sorted((e for e in key_entries if e.window is not None and not window.stale(e.window[1], now)),
                  key=lambda e: e.window[0])


def iso(seconds: float) -> str:
    """Unix seconds as an ISO 8601 UTC time, to the millisecond (fixed width: sorts as it reads)."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


def window_json(window: tuple[float, float]) -> dict[str, str]:
    return {"start": iso(window[0]), "end": iso(window[1])}


# -- rounding ---------------------------------------------------------------------------------

PRICE = "price"
SIZE = "size"
DERIVED = "derived"

_TRADE_CANDLE = {"open": PRICE, "high": PRICE, "low": PRICE, "close": PRICE, "volume": SIZE}
_MARK_CANDLE = {"open": DERIVED, "high": DERIVED, "low": DERIVED, "close": DERIVED, "volume": SIZE}

#: Per table, the fields that are prices or sizes and how each is rounded; ``a[]`` is every
#: item of list ``a``, ``m{}`` every value of map ``m``, ``a.b`` field b of record a. Fields
#: not listed are not rounded. Tables not listed (latency histograms, progress, heartbeats)
#: hold no prices or sizes.
ROUNDED_FIELDS: Mapping[str, Mapping[str, str]] = {
    # positions from our fills: the average entry and the mark are not on the grid.
    "position_pnl": {"position": SIZE, "venue_position": SIZE, "volume": SIZE,
                     "average_price": DERIVED, "mark_price": DERIVED},
    # public trades' prices are on the grid; marks are not.
    "trade_candles_1s": _TRADE_CANDLE, "trade_candles_1m": _TRADE_CANDLE,
    "mark_candles_1s": _MARK_CANDLE, "mark_candles_1m": _MARK_CANDLE,
    # pending fills (price and amount of the fill); the recent mids and marks.
    "markouts": {"pending[].price": PRICE, "pending[].amount": SIZE,
                 "history_mids[]": DERIVED, "history_marks[]": DERIVED},
    # our live orders.
    "resting_quotes": {"orders{}.price": PRICE, "orders{}.amount": SIZE, "orders{}.remaining": SIZE},
    # amounts quoted and filled, and the sum of |position| samples (sizes; spreads and
    # distances are sums of price differences and are not rounded).
    "quote_quality_1m": {"quoted_amount": SIZE, "filled_amount": SIZE, "sum_abs_position": SIZE},
}


@dataclass(frozen=True)
class Steps:
    """An instrument's grid: ``tick_size`` for prices, ``volume_tick_size`` for amounts."""

    tick_size: float
    volume_tick_size: float

    def to_json(self) -> dict[str, float]:
        return {"tick_size": self.tick_size, "volume_tick_size": self.volume_tick_size}

    @classmethod
    def from_json(cls, data: Any) -> Optional["Steps"]:
        """Steps from public/instruments or a peer's answer; None if the numbers are not positive."""
        if not isinstance(data, Mapping):
            return None
        tick, volume = data.get("tick_size"), data.get("volume_tick_size")
        if not (_number(tick) and _number(volume) and tick > 0 and volume > 0):
            return None
        return cls(float(tick), float(volume))


def steps_of(instruments: Mapping[str, Any]) -> dict[str, Steps]:
    """name → Steps of a name → public/instruments (or peer) record mapping, the valid ones."""
    out = {}
    for name, data in instruments.items():
        steps = Steps.from_json(data)
        if isinstance(name, str) and steps is not None:
            out[name] = steps
    return out


def instrument_of(key: Any) -> Optional[str]:
    """The instrument a key is about: the key, or the part before ``|`` (``<instrument>|<stage>``)."""
    return key.split("|", 1)[0] if isinstance(key, str) else None


def decimals(step: float) -> int:
    """Decimal places of ``step`` as written (0.001 → 3, 0.5 → 1, 1.0 → 0, 1e-05 → 5)."""
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def to_step(value: float, step: float) -> float:
    """The nearest multiple of ``step``, written with ``step``'s decimals (no float noise)."""
    return round(math.floor(value / step + 0.5) * step, decimals(step))


def round_number(value: Any, kind: str, steps: Steps) -> Any:
    if not _number(value):
        return value  # None, a string, a non-finite float: nothing to round
    if kind == PRICE:
        return to_step(float(value), steps.tick_size)
    if kind == SIZE:
        return to_step(float(value), steps.volume_tick_size)
    return round(float(value), decimals(steps.tick_size) + 2)


def rounded(table: str, value: Any, steps: Optional[Steps]) -> Any:
    """``value`` (a plain JSON value of ``table``) with its price and size fields rounded."""
    fields = ROUNDED_FIELDS.get(table)
    if steps is None or not fields:
        return value
    for path, kind in fields.items():
        value = _round_path(value, path.split("."), kind, steps)
    return value


def _round_path(value: Any, parts: list[str], kind: str, steps: Steps) -> Any:
    if not parts:
        return round_number(value, kind, steps)
    if not isinstance(value, dict):
        return value
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        name = head[:-2]
        items = value.get(name)
        if isinstance(items, list):
            value = {**value, name: [_round_path(item, rest, kind, steps) for item in items]}
    elif head.endswith("{}"):
        name = head[:-2]
        items = value.get(name)
        if isinstance(items, dict):
            value = {**value, name: {k: _round_path(v, rest, kind, steps) for k, v in items.items()}}
    elif head in value:
        value = {**value, head: _round_path(value[head], rest, kind, steps)}
    return value


# -- summaries --------------------------------------------------------------------------------

#: Tables whose values are latency histograms (schemas/latency_histogram/v1.avsc).
HISTOGRAM_TABLES = frozenset({"stage_latency_1m"})


def summarized(table: str, value: Any) -> Any:
    """A plain JSON value of ``table`` with its histogram's ``summary`` added (tables of
    HISTOGRAM_TABLES only; a value that is no histogram record is returned as it is)."""
    if table not in HISTOGRAM_TABLES or not isinstance(value, dict) or "summary" in value:
        return value
    try:
        summary = LogHistogram.from_record(value).summary()
    except (KeyError, TypeError, ValueError, AttributeError):
        return value
    return {**value, "summary": plain(summary)}


# -- JSON values ------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON: numbers stay numbers (NaN and infinities become null), times ISO 8601,
    records and mappings objects with string keys, sequences lists, bytes base64."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return plain(float(value))
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else key_text(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    to_representation = getattr(value, "to_representation", None)  # a Faust record
    if callable(to_representation):
        return plain(to_representation())
    return str(value)


# -- partitions -------------------------------------------------------------------------------

_partitioner = DefaultPartitioner()


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner (murmur2) gives ``key``: the partition of
    an instrument's records in every pipeline topic (docs/architecture.md#d3-kafka-topics)."""
    every = list(range(partitions))
    return _partitioner(key, every, every)
