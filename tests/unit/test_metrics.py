"""GET /metrics without a worker: LogHistograms counted at fixed bounds, the windowed sums and
carried counters that keep Prometheus counters monotonic, label sets, and the exposition of an
idle worker (every family named by the conventions, with HELP text)."""
from __future__ import annotations

import math
import random
import re
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.analytics.histogram import LogHistogram
from app.metrics import (
    LATENCY_BUCKETS,
    BucketCounts,
    CarriedCounters,
    LabelSet,
    WindowedHistograms,
    bound_label,
    bucket_counts,
    flatten_counts,
    histogram_record_counts,
    label_value,
    lag,
    split_stage_key,
)
from app.trading.risk import TradingState


def _histogram(values_us, relative_error=0.01) -> LogHistogram:
    h = LogHistogram(relative_error)
    for v in values_us:
        h.add(v)
    return h


def _cumulative(counts: BucketCounts) -> dict[str, float]:
    return dict(counts.cumulative(LATENCY_BUCKETS))


# -- LogHistogram → cumulative buckets ---------------------------------------------------------------


def test_samples_land_under_the_first_bound_at_or_above_them_and_sum_count_are_exact():
    h = _histogram([5, 50, 500, 5_000, 50_000, 20_000_000])  # µs: 5 µs … 20 s
    b = _cumulative(bucket_counts(h))
    assert b["1e-05"] == 1 and b["2.5e-05"] == 1
    assert b["0.0001"] == 2
    assert b["0.001"] == 3
    assert b["0.01"] == 4
    assert b["0.1"] == 5
    assert b["10.0"] == 5  # 20 s is above the last bound
    assert b["+Inf"] == 6
    counts = bucket_counts(h)
    assert counts.count == 6
    assert counts.sum == pytest.approx((5 + 50 + 500 + 5_000 + 50_000 + 20_000_000) / 1e6, rel=1e-12)


def test_cumulative_buckets_ascend_end_with_the_count_and_name_prometheus_bounds():
    rng = random.Random(7)
    h = _histogram([rng.lognormvariate(6, 2) for _ in range(2_000)])
    pairs = bucket_counts(h).cumulative(LATENCY_BUCKETS)
    assert [le for le, _ in pairs] == [bound_label(b) for b in LATENCY_BUCKETS] + ["+Inf"]
    values = [v for _, v in pairs]
    assert values == sorted(values)
    assert values[-1] == h.count
    assert all(float(le) > 0 for le, _ in pairs[:-1])


def test_a_buckets_count_never_drops_as_samples_are_added():
    # Each _bucket series is a counter: the placement of a sample must not depend on the others
    # (a new max or min moves nothing already counted).
    rng = random.Random(3)
    h = LogHistogram()
    previous = bucket_counts(h).cumulative(LATENCY_BUCKETS)
    for value in [1_000, 2_000, 10, 9_999_999, 0, 250, *(rng.lognormvariate(6, 2) for _ in range(500))]:
        h.add(value)
        now = bucket_counts(h).cumulative(LATENCY_BUCKETS)
        assert all(b >= a for (_, a), (_, b) in zip(previous, now)), value
        previous = now


def test_a_sample_on_a_bound_is_placed_within_the_relative_error():
    for bound in LATENCY_BUCKETS:
        b = _cumulative(bucket_counts(_histogram([bound * 1e6 * 0.99])))  # 1% under: surely under
        assert b[bound_label(bound)] == 1, bound
        b = _cumulative(bucket_counts(_histogram([bound * 1e6 * 1.03])))  # 3% over: surely over
        assert b[bound_label(bound)] == 0, bound


def test_counts_are_exact_except_for_samples_within_the_relative_error_of_a_bound():
    rng = random.Random(11)
    values = [rng.lognormvariate(7, 2.5) for _ in range(5_000)]  # µs, spread over every bucket
    h = _histogram(values)
    got = _cumulative(bucket_counts(h))
    for bound in LATENCY_BUCKETS:
        us = bound * 1e6
        surely_under = sum(v <= us * (1 - 0.02) for v in values)
        maybe_under = sum(v <= us * (1 + 0.02) for v in values)
        assert surely_under <= got[bound_label(bound)] <= maybe_under, bound


def test_zeros_and_negative_latencies_count_under_every_bound():
    h = _histogram([0, 0, -30, -2_000_000, 40])
    b = _cumulative(bucket_counts(h))
    assert b["1e-05"] == 4  # 40 µs is above 10 µs
    assert b["5e-05"] == 5
    assert bucket_counts(h).sum == pytest.approx((-30 - 2_000_000 + 40) / 1e6)


def test_an_empty_histogram_gives_zero_buckets():
    counts = bucket_counts(LogHistogram())
    assert counts.count == 0 and counts.sum == 0.0
    assert all(v == 0 for _, v in counts.cumulative(LATENCY_BUCKETS))


def test_a_stored_record_converts_like_its_histogram_and_other_bounds_and_units_work():
    h = _histogram([120, 340, 9_000])
    assert histogram_record_counts(h.to_record()) == bucket_counts(h)
    millis = _histogram([0.12, 0.34, 9.0])  # the same in ms
    assert bucket_counts(millis, per_second=1e3).counts == bucket_counts(h).counts
    assert bucket_counts(h, bounds=(0.001, 0.01)).counts == [2, 1, 0]
    with pytest.raises(ValueError):
        bucket_counts(h, bounds=(0.01, 0.001))


def test_bucket_counts_add_and_refuse_other_shapes():
    a = bucket_counts(_histogram([100]))
    total = a.copy()
    total.add(bucket_counts(_histogram([200, 300_000])))
    assert total.count == 3 and sum(total.counts) == 3
    assert a.count == 1  # the copy, not the original, grew
    with pytest.raises(ValueError):
        total.add(BucketCounts([0, 0]))


# -- monotonic over windows and sessions -------------------------------------------------------------


def _window(values):
    return _histogram(values).to_record()


def test_windowed_sums_keep_what_left_the_table():
    w = WindowedHistograms()
    series = ("BTC-PERPETUAL", "received_to_quoted")
    k1, k2 = ("BTC-PERPETUAL|received_to_quoted", (0.0, 59.9)), ("BTC-PERPETUAL|received_to_quoted", (60.0, 119.9))
    first = w.update([(k1, series, _window([100, 200])), (k2, series, _window([300]))])
    assert first[series].count == 3
    # k1 expires (or its partition moves away): the series does not go down.
    second = w.update([(k2, series, _window([300, 400]))])
    assert second[series].count == 4
    assert second[series].sum == pytest.approx((100 + 200 + 300 + 400) / 1e6)
    # Everything gone: what was seen last stays.
    assert w.update([])[series].count == 4
    counts = [_cumulative(x[series]) for x in (first, second)]
    assert all(counts[1][le] >= counts[0][le] for le in counts[0])


def test_windowed_sums_keep_series_apart_and_convert_a_window_only_when_it_grew():
    converted = Counter()

    def convert(record):
        converted[record["count"]] += 1
        return histogram_record_counts(record)

    w = WindowedHistograms(convert=convert)
    a, b = ("X", "s1"), ("X", "s2")
    r1, r2 = _window([100]), _window([5_000, 6_000])
    out = w.update([("k1", a, r1), ("k2", b, r2)])
    assert out[a].count == 1 and out[b].count == 2
    w.update([("k1", a, r1), ("k2", b, r2)])
    assert converted == Counter({1: 1, 2: 1})  # unchanged windows were not converted again
    w.update([("k1", a, _window([100, 100]))])
    assert converted[2] == 2


def test_carried_counters_stay_monotonic_when_the_object_is_replaced():
    carried = CarriedCounters()

    def read(stats):
        return flatten_counts(stats)

    g1 = {"inserts": 3, "errors_by_code": Counter({4: 1})}
    assert carried.totals(g1, read)[("inserts",)] == 3
    g1["inserts"] = 5  # counts after the last scrape, before the session closed
    g1["errors_by_code"][4] += 1
    between = carried.totals(None, read)  # no session
    assert between[("inserts",)] == 5 and between[("errors_by_code", 4)] == 2
    g2 = {"inserts": 1, "errors_by_code": Counter({9: 1})}
    now = carried.totals(g2, read)
    assert now[("inserts",)] == 6 and now[("errors_by_code", 4)] == 2 and now[("errors_by_code", 9)] == 1
    assert carried.totals(g2, read) == now  # the same object is not carried twice


# -- labels ----------------------------------------------------------------------------------------


def test_flatten_counts_keeps_numbers_only():
    stats = {"inserts": 2, "waiting": True, "last_error": "x", "by_code": {3: 1, "n": None}, "seconds": 1.5}
    assert flatten_counts(stats) == {("inserts",): 2, ("by_code", 3): 1, ("seconds",): 1.5}


def test_label_sets_sum_repeats_sort_and_check_arity():
    s = LabelSet(("topic", "partition"))
    s.add(2, "b", 1)
    s.add(3, "a", 0.0)
    s.add(4, "b", 1)
    assert [(x.labels, x.value) for x in s] == [(("a", "0"), 3.0), (("b", "1"), 6.0)]
    with pytest.raises(ValueError):
        s.add(1, "only one")


def test_label_values():
    assert label_value(TradingState.HALTED) == "halted"
    assert label_value(4) == "4" and label_value(4.0) == "4" and label_value(0.5) == "0.5"
    assert label_value(None) == ""
    assert label_value("BTC-PERPETUAL") == "BTC-PERPETUAL"
    assert split_stage_key("BTC-PERPETUAL|received_to_quoted") == ("BTC-PERPETUAL", "received_to_quoted")
    assert split_stage_key("BTCUSD|exchange_to_received") == ("BTCUSD", "exchange_to_received")
    assert split_stage_key("odd") == ("", "odd")


def test_lag():
    assert lag(120, 100) == 20
    assert lag(100, 120) == 0
    assert lag(None, 3) is None and lag(3, None) is None


# -- the exposition of an idle worker ----------------------------------------------------------------

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def test_an_idle_workers_exposition_follows_the_conventions():
    from agents import metrics

    text = metrics.exposition().decode()
    families = list(text_string_to_metric_families(text))
    ours = [f for f in families if f.name.startswith("cryptics_")]
    assert len(ours) > 60
    for family in families:
        assert _NAME.match(family.name), family.name
        assert family.documentation.strip(), f"{family.name} has no HELP"
        assert family.name.startswith(("cryptics_", "process_", "python_")), family.name
        for sample in family.samples:
            for label in sample.labels:
                assert _NAME.match(label), (family.name, label)
    for family in ours:
        if family.type == "counter":  # the parser strips _total; the text carries it
            assert f"# TYPE {family.name}_total counter" in text, family.name
        assert not family.name.endswith(("_ms", "_milliseconds", "_us", "_micros")), family.name
    names = {f.name for f in ours}
    for expected in ("cryptics_stage_latency_seconds", "cryptics_tick_to_order_seconds", "cryptics_trading_state",
                     "cryptics_kill_switch_tripped", "cryptics_gateway_requests", "cryptics_consumer_lag_records",
                     "cryptics_producer_queue_records", "cryptics_venue_reconnects", "cryptics_position_contracts",
                     "cryptics_pnl_net", "cryptics_fees", "cryptics_sink_rows_written",
                     "cryptics_sink_dead_letters", "cryptics_faust_stream_events"):
        assert expected in names, expected
    state = next(f for f in ours if f.name == "cryptics_trading_state")
    assert sorted(s.labels["state"] for s in state.samples) == sorted(s.value for s in TradingState)
    assert sum(s.value for s in state.samples) == 1.0
    assert not any(math.isnan(s.value) for f in ours for s in f.samples)


def test_histogram_families_expose_cumulative_buckets_sum_and_count():
    from agents import metrics

    series = {("BTC-PERPETUAL", "received_to_quoted"): bucket_counts(_histogram([40, 60, 2_000]))}
    family = metrics.histogram("cryptics_test_seconds", "A test.", ("instrument", "stage"), series)
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("cryptics_test_seconds_bucket", "5e-05")] == 1
    assert samples[("cryptics_test_seconds_bucket", "0.0001")] == 2
    assert samples[("cryptics_test_seconds_bucket", "+Inf")] == 3
    assert samples[("cryptics_test_seconds_count", None)] == 3
    assert samples[("cryptics_test_seconds_sum", None)] == pytest.approx(0.0021)


@pytest.fixture
def loop_turns(monkeypatch) -> Counter:
    """How often agents/metrics.py gives the event loop back (``asyncio.sleep``), under ``"sleep"``."""
    from agents import metrics

    turns: Counter = Counter()
    real_sleep = metrics.asyncio.sleep

    async def counting_sleep(delay):
        turns["sleep"] += 1
        await real_sleep(delay)

    monkeypatch.setattr(metrics.asyncio, "sleep", counting_sleep)
    return turns


async def test_a_scrape_reads_the_latency_windows_in_slices_and_adds_each_growth_once(monkeypatch, loop_turns):
    from agents import metrics

    windows = {(f"BTC-PERPETUAL|stage{i % 3}", (i * 60.0, i * 60.0 + 59.9)): _window([100 + i, 2_000])
               for i in range(300)}
    monkeypatch.setattr(metrics, "_store_items", lambda table: list(windows.items()))
    monkeypatch.setattr(metrics, "_stage_windows", WindowedHistograms())
    monkeypatch.setattr(metrics, "SLICE_SECONDS", 0.0)  # yield at every chance
    await metrics.refresh_stage_latency()
    assert loop_turns["sleep"] >= 4  # 300 windows, a chance every 64
    totals = metrics._stage_windows.totals()
    assert {k: v.count for k, v in totals.items()} == {("BTC-PERPETUAL", f"stage{s}"): 200 for s in range(3)}
    first_key = next(iter(windows))
    windows[first_key] = _window([100, 2_000, 3_000])  # a window grew
    del windows[list(windows)[-1]]  # another one expired
    await metrics.refresh_stage_latency()
    await metrics.refresh_stage_latency()
    totals = metrics._stage_windows.totals()
    assert totals[("BTC-PERPETUAL", "stage0")].count == 201
    assert sum(v.count for v in totals.values()) == 601
    family = next(iter(metrics.latency_metrics()))
    assert family.name == "cryptics_stage_latency_seconds"


async def test_the_sliced_exposition_is_the_whole_one_and_gives_the_loop_back_between_sections(loop_turns):
    from agents import metrics

    def ours(text: str) -> dict:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) if f.name.startswith("cryptics_") for s in f.samples
                if not s.name.startswith("cryptics_heartbeat_age")}  # the clock moves between the two
    sliced = (await metrics.exposition_in_slices()).decode()
    whole = metrics.exposition().decode()
    assert ours(sliced) == ours(whole) and len(ours(whole)) > 60
    names = [f.name for f in text_string_to_metric_families(sliced)]
    assert len(names) == len(set(names))  # every family once
    assert any(name.startswith("process_") for name in names)
    assert loop_turns["sleep"] >= len(metrics.SECTIONS)  # after the standard collectors and after each section


def test_every_metric_is_in_the_operations_table_and_every_name_there_exists():
    from pathlib import Path

    from agents import metrics

    root = Path(__file__).resolve().parents[2]
    source = Path(metrics.__file__).read_text()
    defined = {n for n in re.findall(r'"(cryptics_[a-z0-9_]+)"', source) if not n.endswith("_")}
    text = (root / "docs" / "operations.md").read_text()
    section = text[text.index("### Metrics"):]
    section = section[:section.index("\n### ", 1)]
    documented = {n for n in re.findall(r"`(cryptics_[a-z0-9_]+)`", section) if not n.endswith("_")}
    exposed = {f.name + ("_total" if f.type == "counter" else "")
               for f in text_string_to_metric_families(metrics.exposition().decode()) if f.name.startswith("cryptics_")}
    assert exposed <= defined
    assert defined - documented == set(), "metrics missing from docs/operations.md#metrics"
    assert documented - defined == set(), "docs/operations.md#metrics names metrics that do not exist"
