"""The table views' pure parts (app/web/tables.py): paging, cursors, windows, rounding, JSON values."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.windows import HoppingWindow, TumblingWindow

from app.web import tables as t
from app.web.tables import BadRequest, Entry, Steps

BTC = Steps(1.0, 0.001)
ETH = Steps(0.1, 0.01)


# -- query parameters -----------------------------------------------------------------------


def test_limit_defaults_and_bounds():
    assert t.parse_limit(None) == t.DEFAULT_LIMIT == t.parse_limit("")
    assert t.parse_limit("1") == 1 and t.parse_limit(str(t.MAX_LIMIT)) == t.MAX_LIMIT


@pytest.mark.parametrize("raw", ["0", "-1", "1001", "abc", "1.5", " 5", "5 ", "1e3", "99999999999", "+5"])
def test_a_bad_limit_is_refused(raw):
    with pytest.raises(BadRequest, match="limit"):
        t.parse_limit(raw)


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "31", "x"])
def test_a_bad_timeout_is_refused(raw):
    with pytest.raises(BadRequest, match="timeout"):
        t.parse_timeout(raw)


def test_timeout_and_flag():
    assert t.parse_timeout(None) == t.PEER_TIMEOUT and t.parse_timeout("0.5") == 0.5
    assert t.parse_flag("1") and t.parse_flag("True") and not t.parse_flag(None) and not t.parse_flag("0")


# -- cursors and pages ----------------------------------------------------------------------


def test_a_cursor_round_trips_and_is_opaque():
    for position in (("BTC-PERPETUAL", None), ("ETH-PERPETUAL|received_to_quoted", 1764763200.0)):
        cursor = t.encode_cursor("markouts", position)
        assert "BTC" not in cursor and "=" not in cursor and "/" not in cursor
        assert t.decode_cursor("markouts", cursor) == position
    assert t.decode_cursor("markouts", None) is None and t.decode_cursor("markouts", "") is None


@pytest.mark.parametrize("raw", ["abc", "!!!", "eyJ0IjoxfQ", t.encode_cursor("x", ("a", None))[:-3],
                                 "x" * 5000, "W10", "eyJ0IjoibWFya291dHMiLCJwIjpbMSwyXX0"])
def test_a_bad_cursor_is_refused(raw):
    with pytest.raises(BadRequest):
        t.decode_cursor("markouts", raw)


def test_a_cursor_of_another_table_is_refused():
    with pytest.raises(BadRequest, match="another table"):
        t.decode_cursor("markouts", t.encode_cursor("position_pnl", ("a", None)))


def _entries(keys, windows=(None,)):
    return [Entry(k, w, {"k": k, "w": w}) for k in keys for w in windows]


def test_pages_walk_the_whole_table_in_key_then_window_order():
    windows = [(s, s + 0.9) for s in (3.0, 1.0, 2.0)]
    items = _entries(["b", "a", "c|x", "c|y"], windows)
    seen, after = [], None
    while True:
        chosen, more = t.page(items, after=after, limit=5)
        seen += chosen
        if not more:
            break
        after = chosen[-1].position
    assert [e.position for e in seen] == sorted(e.position for e in items)
    assert len(seen) == len(items)


def test_a_prefix_selects_keys():
    chosen, more = t.page(_entries(["BTC-PERPETUAL|a", "BTC-PERPETUAL|b", "BTCUSD|a", "ETH-PERPETUAL|a"]),
                          prefix="BTC-PERPETUAL|")
    assert [e.key for e in chosen] == ["BTC-PERPETUAL|a", "BTC-PERPETUAL|b"] and not more


def test_a_position_stays_valid_as_entries_come_and_go():
    chosen, _ = t.page(_entries(["a", "b", "c", "d"]), limit=2)
    after = chosen[-1].position
    # "b" was deleted and "bb" added meanwhile: the next page starts after "b" all the same.
    rest, more = t.page(_entries(["a", "bb", "c", "d"]), after=after, limit=10)
    assert [e.key for e in rest] == ["bb", "c", "d"] and not more


def _item(key, start, worker):
    return {"key": key, "value": worker, "worker": worker, "position": [key, start]}


def test_pages_of_several_workers_merge_into_the_first_limit_of_their_union():
    everything = {("k%02d" % i, float(s)) for i in range(10) for s in range(3)}
    by_worker = {w: sorted(p for j, p in enumerate(sorted(everything)) if j % 3 == w) for w in range(3)}
    seen, after = [], None
    while True:
        pages = []
        for w, positions in by_worker.items():
            mine = [p for p in positions if after is None or p > after]
            pages.append(([_item(k, s, w) for k, s in mine[:4]], len(mine) > 4))
        items, more = t.merge(pages, 4)
        assert len(items) <= 4
        seen += [tuple(i["position"]) for i in items]
        if not more:
            break
        after = seen[-1]
    assert seen == sorted(everything)


def test_an_entry_two_workers_hold_is_kept_once():
    items, more = t.merge([([_item("a", None, "x")], False), ([_item("a", None, "y"), _item("b", None, "y")], False)], 10)
    assert [(i["key"], i["worker"]) for i in items] == [("a", "x"), ("b", "y")] and not more


def test_a_peer_item_without_a_position_is_not_merged():
    assert t.valid_item(_item("a", 1.0, "x")) and t.valid_item(_item("a", None, "x"))
    for bad in ({}, [], {"position": ["a"]}, {"position": [1, None]}, {"position": ["a", "1"]},
                {"position": ["a", float("nan")]}, {"position": ["a", True]}):
        assert not t.valid_item(bad)


def test_windowed_entries_unpack_their_stored_keys():
    got = t.entries([(("BTC-PERPETUAL", (60.0, 119.9)), {"x": 1}), ("garbage", {}), (("k", [0, 59.9]), {})], True)
    assert [(e.key, e.window) for e in got] == [("BTC-PERPETUAL", (60.0, 119.9)), ("k", (0.0, 59.9))]


# -- windows ----------------------------------------------------------------------------------


def test_window_choices_parse():
    assert t.parse_window(None) == t.WindowChoice("now")
    assert t.parse_window("series").kind == "series" and t.parse_window("current").kind == "current"
    assert t.parse_window("delta:60s") == t.WindowChoice("delta", 60.0)
    assert t.parse_window("delta:2m").delta == 120.0 and t.parse_window("delta:1h").delta == 3600.0
    assert t.parse_window("delta:1.5").delta == 1.5
    assert t.parse_window("delta:90s").text == "delta:90s"


@pytest.mark.parametrize("raw", ["yesterday", "delta:", "delta:-5s", "delta:5d", "delta:abc", "NOW", "delta:1e9",
                                 "delta:nan", "series "])
def test_a_bad_window_is_refused(raw):
    with pytest.raises(BadRequest, match="window"):
        t.parse_window(raw)


def test_windows_are_faust_windowsets_relative_to_now():
    window = TumblingWindow(60, expires=3600)
    now = 1764763230.5  # 30.5 s into a minute
    minute = 1764763200.0
    assert t.chosen_range(t.WindowChoice("now"), window, now) == (minute, minute + 59.9)
    assert t.chosen_range(t.WindowChoice("current"), window, now) == (minute, minute + 59.9)
    assert t.chosen_range(t.WindowChoice("delta", 60), window, now) == (minute - 60, minute - 0.1)
    # A hopping window: now is the earliest window holding the time, current the latest.
    hopping = HoppingWindow(60, 10)
    assert t.chosen_range(t.WindowChoice("now"), hopping, now) == tuple(map(float, hopping.earliest(now)))
    assert t.chosen_range(t.WindowChoice("current"), hopping, now) == tuple(map(float, hopping.current(now)))
    assert t.chosen_range(t.WindowChoice("now"), hopping, now) != t.chosen_range(t.WindowChoice("current"), hopping, now)


def test_a_series_is_every_live_window_oldest_first():
    window = TumblingWindow(60, expires=600)
    now = 10_000.0
    starts = [9960.0, 9000.0, 9900.0, 9360.0, 8000.0]  # 9000 and 8000 ended over 600 s ago
    mine = [Entry("k", (s, s + 59.9), s) for s in starts]
    assert [e.window[0] for e in t.live_series(mine, window, now)] == [9360.0, 9900.0, 9960.0]
    assert t.find_window(mine, (9900.0, 9959.9)).value == 9900.0 and t.find_window(mine, (60.0, 119.9)) is None


def test_windows_are_iso_times():
    start = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc).timestamp()
    assert t.window_json((start, start + 59.9)) == {"start": "2026-12-03T12:00:00.000+00:00",
                                                    "end": "2026-12-03T12:00:59.900+00:00"}


# -- rounding ---------------------------------------------------------------------------------


def test_steps_and_decimals():
    assert [t.decimals(x) for x in (0.001, 0.5, 1.0, 10.0, 1e-05, 0.25)] == [3, 1, 0, 0, 5, 2]
    assert t.to_step(0.17200000000000001, 0.001) == 0.172 and repr(t.to_step(0.1 + 0.2, 0.01)) == "0.3"
    assert t.to_step(67123.4, 1.0) == 67123.0 and t.to_step(-0.0105, 0.001) == -0.01
    assert t.to_step(3456.78, 0.5) == 3457.0


def test_prices_and_sizes_round_to_the_instruments_steps_and_nothing_else_does():
    state = {"instrument_name": "BTC-PERPETUAL", "position": 0.17200000000000001, "average_price": 67123.45678,
             "realized_pnl": 1.23456789, "fees_maker": 0.000123456, "mark_price": 67000.50400001, "volume": 0.30000000000000004,
             "venue_position": None, "trades": 3, "notional": 20000.123456, "offsets": {"fill": 12}}
    got = t.rounded("position_pnl", state, BTC)
    assert got["position"] == 0.172 and got["volume"] == 0.3 and got["venue_position"] is None
    assert got["average_price"] == 67123.46 and got["mark_price"] == 67000.5  # a hundredth of a 1.0 tick
    for untouched in ("realized_pnl", "fees_maker", "trades", "notional", "offsets"):
        assert got[untouched] == state[untouched]
    assert state["position"] == 0.17200000000000001  # the input is not changed
    assert t.rounded("position_pnl", got, BTC) == got  # rounding twice changes nothing


def test_nested_fields_round_too():
    book = {"pending": [{"price": 3500.1000000000004, "amount": 0.1 + 0.2, "time": 1.123456789}],
            "history_mids": [3500.05, None], "history_marks": [3500.12345], "totals": [{"sum_markout": 0.123456}]}
    got = t.rounded("markouts", book, ETH)
    assert got["pending"] == [{"price": 3500.1, "amount": 0.3, "time": 1.123456789}]
    assert got["history_mids"] == [3500.05, None] and got["history_marks"] == [3500.123]
    assert got["totals"] == book["totals"]
    resting = {"orders": {"o1": {"price": 67000.00000001, "amount": 0.010000000000000002, "remaining": 0.005}}}
    assert t.rounded("resting_quotes", resting, BTC)["orders"]["o1"] == {"price": 67000.0, "amount": 0.01,
                                                                        "remaining": 0.005}
    trade = {"open": 67000.4, "high": 67001.0, "low": 66999.6, "close": 67000.0, "volume": 0.0070000000000000001}
    mark = dict(trade)
    assert t.rounded("trade_candles_1m", trade, BTC)["low"] == 67000.0
    assert t.rounded("mark_candles_1m", mark, BTC)["low"] == 66999.6


def test_without_steps_or_fields_nothing_is_rounded():
    value = {"position": 0.17200000000000001}
    assert t.rounded("position_pnl", value, None) == value
    assert t.rounded("heartbeat_counts", 5, BTC) == 5
    assert t.rounded("stage_latency_1m", {"sum": 1.23456}, BTC) == {"sum": 1.23456}


def test_the_instrument_of_a_key():
    assert t.instrument_of("BTC-PERPETUAL") == "BTC-PERPETUAL"
    assert t.instrument_of("ETH-PERPETUAL|received_to_quoted") == "ETH-PERPETUAL"
    assert t.instrument_of(("a", "b")) is None


def test_steps_from_public_instruments():
    listed = {"BTC-PERPETUAL": {"tick_size": 1.0, "volume_tick_size": 0.001, "underlying": "BTCUSD"},
              "BAD": {"tick_size": 0, "volume_tick_size": 0.1}, "ALSO-BAD": {"tick_size": "1"}, "X": None}
    assert t.steps_of(listed) == {"BTC-PERPETUAL": BTC}
    assert Steps.from_json(BTC.to_json()) == BTC


# -- JSON values and partitions ----------------------------------------------------------------


def test_values_become_json():
    at = datetime(2026, 12, 3, tzinfo=timezone.utc)
    got = t.plain({"a": (1, 2.5), "b": float("nan"), "c": math.inf, "d": at, ("x", 1): b"\x00", "e": True})
    assert got == {"a": [1, 2.5], "b": None, "c": None, "d": "2026-12-03T00:00:00+00:00", '["x", 1]': "AA==",
                   "e": True}
    json.dumps(got, allow_nan=False)


def test_key_partition_is_the_producers_partitioner():
    partitioner = DefaultPartitioner()
    for key in ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTCUSD", "worker-1"):
        assert t.key_partition(key.encode(), 3) == partitioner(key.encode(), [0, 1, 2], [0, 1, 2])


# -- a listing's window, histogram summaries (the inspector's charts read them) -------------

def test_a_listing_window_keeps_one_entry_per_key():
    window = TumblingWindow(60)
    stored = [(("A", (0.0, 59.9)), 1), (("A", (60.0, 119.9)), 2), (("B", (60.0, 119.9)), 3), (("C", (0.0, 59.9)), 4)]
    now = t.chosen_range(t.parse_window("now"), window, 75.0)
    chosen = t.in_window(t.entries(stored, True), now)
    assert [(e.key, e.value) for e in chosen] == [("A", 2), ("B", 3)]
    before = t.chosen_range(t.parse_window("delta:60s"), window, 75.0)
    assert [(e.key, e.value) for e in t.in_window(t.entries(stored, True), before)] == [("A", 1), ("C", 4)]


def test_a_latency_histogram_carries_its_summary():
    from app.analytics.histogram import LogHistogram
    h = LogHistogram()
    for v in (10.0, 20.0, 30.0, 1000.0):
        h.add(v)
    value = t.plain(h.to_record())
    summarized = t.summarized("stage_latency_1m", value)
    assert summarized["summary"] == h.summary() and summarized["summary"]["count"] == 4
    assert {k: v for k, v in summarized.items() if k != "summary"} == value  # the record itself unchanged
    assert t.summarized("position_pnl", value) is value  # only histogram tables
    assert t.summarized("stage_latency_1m", {"count": 1}) == {"count": 1}  # no histogram record: as it is
    assert json.dumps(t.summarized("stage_latency_1m", t.plain(LogHistogram().to_record())))  # empty: nulls
