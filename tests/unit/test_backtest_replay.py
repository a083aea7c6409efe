"""The replay end to end on small synthetic recordings (app/backtest/replay.py, run.py, report.py, data.py)."""
from __future__ import annotations

import json
import math

import pytest

from app.backtest.data import DataError, InstrumentInfo, build, find_gaps, load_parquet
from app.backtest.latency import ConstantLatency
from app.backtest.report import summary, write
from app.backtest.run import Backtest, parse_grid, run_grid, run_one
from tests.backtest_data import INSTRUMENT, T0, tables, write_dataset

INFO = InstrumentInfo("BTC-PERPETUAL", "BTCUSD", 1.0, 0.001)


def market(seconds=60.0, seed=1, **kwargs):
    t = tables(seconds=seconds, seed=seed, **kwargs)
    return build(INFO, T0, T0 + seconds, t["tickers"], t["index_prices"], t["book_updates"], t["public_trades"],
                 book_depth="full", source="test")


def test_a_replay_quotes_fills_and_books_the_fills_through_the_analytics():
    result = run_one(market(), Backtest())
    s = summary(result)
    assert s["fills"] > 0 and s["fills"] == result.pnl["trades"]
    assert s["volume"] == pytest.approx(result.pnl["volume"])
    assert result.counters["gateway"]["inserts"] > 0
    # Every fill is a maker fill at a price the strategy quoted, and pays the maker fee.
    assert all(f["maker_taker"] == "maker" for f in result.fills)
    assert result.pnl["fees"] == pytest.approx(sum(f["fee"] for f in result.fills))
    # The position the fills add up to is the position the analytics hold.
    signed = sum(f["amount"] * (1 if f["direction"] == "buy" else -1) for f in result.fills)
    assert result.pnl["position"] == pytest.approx(signed)
    assert abs(result.pnl["position"]) <= Backtest().risk.max_position + 1e-9
    assert 0 < s["uptime"] <= 1
    assert result.markouts["buy"]["1"]["count"] + result.markouts["sell"]["1"]["count"] > 0


def test_a_quote_far_from_the_market_never_fills():
    wide = Backtest().with_overrides({"half_spread": 5000.0})
    result = run_one(market(), wide)
    assert result.fills == [] and result.pnl["trades"] == 0


def test_order_latency_delays_the_first_order_at_the_venue():
    slow = run_one(market(), Backtest(latency=ConstantLatency(0.0, 30.0)))
    fast = run_one(market(), Backtest(latency=ConstantLatency(0.0, 0.001)))
    assert len(slow.fills) < len(fast.fills)
    assert min(f["time"] for f in slow.fills) >= T0 + 15.0  # nothing rests before half the round trip


def test_a_halted_trading_state_sends_nothing():
    result = run_one(market(), Backtest(trading_state="halted"))
    assert result.counters["gateway"].get("inserts", 0) == 0 and result.fills == []


def test_the_probabilistic_queue_fills_at_least_as_early_as_the_conservative_one():
    # Quotes inside a deep book: the queue ahead of us matters, and cancellations shrink it.
    inside = {"half_spread": 5.0, "level_step": 1.0}
    conservative = run_one(market(seed=3, levels=20), Backtest(queue_model="conservative").with_overrides(inside))
    probabilistic = run_one(market(seed=3, levels=20), Backtest(queue_model="probabilistic").with_overrides(inside))
    assert len(conservative.fills) >= 1
    assert [f["time"] for f in conservative.fills] != [f["time"] for f in probabilistic.fills]
    assert min(f["time"] for f in probabilistic.fills) <= min(f["time"] for f in conservative.fills)


def test_gaps_are_reported_not_filled():
    assert find_gaps([1.0, 2.0, 10.0, 11.0], 0.0, 20.0, 5.0) == [(2.0, 10.0), (11.0, 20.0)]
    t = tables(seconds=60.0)
    keep = lambda rows: [r for r in rows if not (T0 + 20 <= r["time"] < T0 + 35)]  # noqa: E731
    data = build(INFO, T0, T0 + 60, keep(t["tickers"]), keep(t["index_prices"]), keep(t["book_updates"]),
                 keep(t["public_trades"]), book_depth="full", source="test")
    assert len(data.gaps) == 1
    a, b = data.gaps[0]
    assert a < T0 + 20 < T0 + 35 <= b and b - a == pytest.approx(15.0, abs=0.2)


def test_empty_range_is_a_data_error():
    with pytest.raises(DataError, match="no market data for BTC-PERPETUAL"):
        build(INFO, T0, T0 + 1, [], [], [], [], book_depth="full", source="test")


def test_parquet_dataset_reads_back_the_same_events(tmp_path):
    t = tables(seconds=30.0)
    write_dataset(tmp_path / "ds", t)
    from_parquet = load_parquet(tmp_path / "ds", "BTC-PERPETUAL", T0, T0 + 30)
    direct = build(INFO, T0, T0 + 30, t["tickers"], t["index_prices"], t["book_updates"], t["public_trades"],
                   book_depth="full", source="test")
    assert from_parquet.events == direct.events
    assert from_parquet.instrument == InstrumentInfo(INSTRUMENT["instrument_name"], "BTCUSD", 1.0, 0.001)


def test_parquet_with_a_missing_column_is_a_wrong_shape_error(tmp_path):
    t = tables(seconds=5.0)
    for row in t["public_trades"]:
        del row["direction"]
    write_dataset(tmp_path / "ds", t)
    with pytest.raises(DataError, match="public_trades.parquet: wrong shape: missing column\\(s\\) direction"):
        load_parquet(tmp_path / "ds", "BTC-PERPETUAL")


def test_unknown_instrument_in_a_dataset(tmp_path):
    write_dataset(tmp_path / "ds", tables(seconds=5.0))
    with pytest.raises(DataError, match="unknown instrument 'ETH-PERPETUAL'.*BTC-PERPETUAL"):
        load_parquet(tmp_path / "ds", "ETH-PERPETUAL")


def test_grid_parsing_and_an_unknown_parameter():
    assert parse_grid(["half_spread=10,25", "size_skew=0,0.5"]) == [
        {"half_spread": 10.0, "size_skew": 0.0}, {"half_spread": 10.0, "size_skew": 0.5},
        {"half_spread": 25.0, "size_skew": 0.0}, {"half_spread": 25.0, "size_skew": 0.5}]
    with pytest.raises(ValueError, match="unknown grid parameter 'half_sprad'"):
        parse_grid(["half_sprad=1,2"])
    with pytest.raises(ValueError, match="not a number"):
        parse_grid(["half_spread=wide"])


def test_a_grid_on_two_processes_equals_the_same_points_one_by_one():
    data = market(seconds=30.0)
    points = parse_grid(["half_spread=5,25"])
    parallel = run_grid(data, Backtest(), points, workers=2)
    serial = run_grid(data, Backtest(), points, workers=1)
    assert parallel == serial
    assert [row["parameters"] for row in parallel] == points
    assert parallel[0]["fills"] != parallel[1]["fills"]


def test_the_report_files(tmp_path):
    result = run_one(market(), Backtest())
    document = write(result, tmp_path, {"queue_model": "conservative"})
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"] == document["summary"]
    assert on_disk["summary"]["fills"] == len(on_disk["fills"])
    assert on_disk["summary"]["volume"] == pytest.approx(sum(f["amount"] for f in on_disk["fills"]))
    page = (tmp_path / "report.html").read_text()
    assert '<script src="plotly.min.js">' in page and "http" not in page.split("<body>")[0]
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000
    for plot in ("price", "pnl", "inventory", "markouts", "drawdown"):
        assert f"id='{plot}'" in page
    assert all(math.isfinite(v) for v in (on_disk["summary"]["net_pnl"], on_disk["summary"]["max_drawdown"]))


def test_fees_are_the_maker_rate_of_the_notional_and_funding_is_paid_on_the_venue_position():
    t = tables(seconds=60.0)
    data = build(INFO, T0, T0 + 60, t["tickers"], t["index_prices"], t["book_updates"], t["public_trades"],
                 book_depth="full", source="test")
    result = run_one(data, Backtest().with_overrides({"half_spread": 5.0}))
    assert result.fills
    notional = sum(f["price"] * f["amount"] for f in result.fills)
    assert result.pnl["fees"] == pytest.approx(Backtest().fees.maker_rate * notional)
    # Funding: the position at the venue (fills by their venue time) pays each change of the funding mark.
    paid, previous = 0.0, None
    for ticker in t["tickers"]:
        if previous is not None:
            position = sum(f["amount"] * (1 if f["direction"] == "buy" else -1)
                           for f in result.fills if f["time"] <= ticker["time"])
            paid += position * (ticker["funding_mark"] - previous)
        previous = ticker["funding_mark"]
    assert paid != 0
    assert result.pnl["funding"] == pytest.approx(-paid, rel=1e-6)


def test_the_gateway_rate_limit_holds_orders_back_on_the_replay_clock():
    slow = Backtest().with_overrides({"order_rate_cod": 5.0, "half_spread": 5.0})  # 4 a second at 80 % headroom
    result = run_one(market(seconds=60.0), slow)
    gateway = result.counters["gateway"]
    assert gateway["throttled_local"] > 0
    assert gateway.get("inserts", 0) + gateway.get("amends", 0) <= 4 * 60 + 4
    free = run_one(market(seconds=60.0), Backtest().with_overrides({"half_spread": 5.0})).counters
    assert free["gateway"].get("inserts", 0) + free["gateway"].get("amends", 0) > \
        gateway.get("inserts", 0) + gateway.get("amends", 0)


@pytest.mark.parametrize("half_spread", [5.0, 25.0])
def test_skipping_unchanged_decisions_changes_nothing_that_is_sent(half_spread):
    from app.backtest.matching import queue_model
    from app.backtest.replay import Replay

    data = market(seconds=60.0, seed=5, levels=20)
    backtest = Backtest().with_overrides({"half_spread": half_spread})

    def replay(skip):
        return Replay(data, backtest.quote, backtest.risk, backtest.gateway, queue_model("conservative"),
                      backtest.latency, backtest.fees, skip_unchanged=skip).run()

    skipping, every = replay(True), replay(False)
    assert skipping.counters["skipped_decisions"] > 0 and every.counters["skipped_decisions"] == 0
    assert skipping.fills == every.fills and skipping.pnl == every.pnl
    sent = ("inserts", "amends", "cancels", "throttled_local")
    assert {k: skipping.counters["gateway"].get(k) for k in sent} == {k: every.counters["gateway"].get(k) for k in sent}
    assert skipping.quality["mean_spread"] == pytest.approx(every.quality["mean_spread"])


def test_the_replays_acks_and_fills_hold_what_the_gateways_records_would():
    """The replay's tracker builds plain dicts where the live one builds Faust records: every
    value the replay reads is the record's, of the same type."""
    from app.backtest.matching import queue_model
    from app.backtest.replay import Replay, _ack_dict, _fill_dict
    from app.gateway.records import ack_record, fill_record
    from app.gateway.tracker import OrderTracker

    backtest = Backtest().with_overrides({"half_spread": 5.0})
    replay = Replay(market(seconds=60.0), backtest.quote, backtest.risk, backtest.gateway,
                    queue_model("conservative"), backtest.latency, backtest.fees)
    compared = []

    def same(plain, record):
        assert {key: (type(value), value) for key, value in plain.items()} == \
            {key: (type(getattr(record, key)), getattr(record, key)) for key in plain}
        compared.append(type(record).__name__)
        return plain

    replay.tracker = OrderTracker(replay.context, replay.positions,
                                  ack_builder=lambda *args: same(_ack_dict(*args), ack_record(*args)),
                                  fill_builder=lambda *args: same(_fill_dict(*args), fill_record(*args)))
    result = replay.run()
    assert result.fills and compared.count("Fill") == len(result.fills)
    assert compared.count("Ack") == result.counters["gateway"]["acks"]


def test_stale_data_pulls_the_quotes_during_a_gap_before_the_next_trade():
    def recording(trade_at):
        tickers, books = [], []
        for k in range(100):  # 10 s of data, then nothing until the trade
            t = T0 + k * 0.1
            tickers.append({"time": t, "mark_price": 50_000.0, "index_price": 50_000.0, "best_bid_price": 49_990.0,
                            "best_ask_price": 50_010.0, "funding_rate": 0.0, "funding_mark": 0.0})
            books.append({"time": t, "snapshot": True, "bid_prices": [49_990.0], "bid_amounts": [1.0],
                          "ask_prices": [50_010.0], "ask_amounts": [1.0]})
        trades = [{"time": trade_at, "price": 49_000.0, "amount": 1.0, "direction": "sell"}]
        return build(INFO, T0, T0 + 40, tickers, [], books, trades, book_depth="full", source="test")

    before_gap = run_one(recording(T0 + 9.5), Backtest())
    assert [f["direction"] for f in before_gap.fills] == ["buy", "buy"]  # both bid levels, traded through
    after_gap = run_one(recording(T0 + 30.0), Backtest())
    assert after_gap.fills == []  # the 5 s staleness halt cancelled the bids first
    assert after_gap.counters["gateway"]["cancels"] >= 2
    assert after_gap.counters["denials"].get("halted_stale_data", 0) > 0


def test_mass_quote_mode_is_refused():
    with pytest.raises(ValueError, match="order mode only"):
        run_one(market(seconds=5.0), Backtest().with_overrides({"mass_quote": True}))
