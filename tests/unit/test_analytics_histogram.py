"""The latency histogram (app/analytics/histogram.py) by example, with numbers worked by hand.

Most examples use relative_error 1/3, where gamma is 2: bucket i holds (2**(i-1), 2**i] and
its representative is 2**(i+1) / 3. Random lists against percentile_cont:
tests/property/test_analytics_histogram.py.
"""
from __future__ import annotations

import io
import math

import fastavro
import pytest

from app.analytics.histogram import LogHistogram
from models import schemas

SCHEMA = fastavro.parse_schema(schemas.load("latency_histogram"))


def histogram(*values: float, relative_error: float = 1 / 3) -> LogHistogram:
    h = LogHistogram(relative_error)
    for v in values:
        h.add(v)
    return h


def round_trip(h: LogHistogram) -> LogHistogram:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, h.to_record())
    out.seek(0)
    return LogHistogram.from_record(fastavro.schemaless_reader(out, SCHEMA))


def test_buckets_are_powers_of_gamma():
    h = histogram(3, 5, 6, 7, 100)
    assert h.gamma == pytest.approx(2.0)
    # 3 in (2, 4]; 5, 6, 7 in (4, 8]; 100 in (64, 128].
    assert h.positive == {2: 1, 3: 3, 7: 1}
    assert (h.count, h.sum, h.min, h.max, h.zero_count, h.negative) == (5, 121, 3, 100, 0, {})


def test_default_relative_error_bucket():
    # gamma = 1.01 / 0.99; ln(1000) / ln(gamma) = 6.907755 / 0.0200007 = 345.37.
    h = histogram(1000, 1000, relative_error=0.01)
    assert h.positive == {346: 2}
    representative = 2 * h.gamma ** 346 / (h.gamma + 1)
    assert abs(representative - 1000) / 1000 <= 0.01


def test_quantiles_interpolate_like_percentile_cont():
    h = histogram(3, 5, 6, 7, 100)
    # Ranks q * 4 over the estimates [3 (min), 16/3, 16/3, 16/3, 100 (max)].
    assert h.quantile(0) == 3
    assert h.quantile(1) == 100
    assert h.quantile(0.25) == pytest.approx(16 / 3)            # rank 1
    assert h.quantile(0.5) == pytest.approx(16 / 3)             # rank 2
    assert h.quantile(0.1) == pytest.approx(3 + 0.4 * (16 / 3 - 3))   # rank 0.4: 3.9333
    assert h.quantile(0.9) == pytest.approx(186.4 / 3)          # rank 3.6: 16/3 + 0.6 * 284/3
    assert h.quantiles([0.9, 0.1]) == [h.quantile(0.9), h.quantile(0.1)]


def test_estimates_are_clamped_to_min_and_max():
    # All three in (4, 8], representative 16/3 = 5.33 > max.
    h = histogram(5, 5.1, 5.2)
    assert h.quantile(0.5) == 5.2
    assert h.quantile(0.25) == pytest.approx(5 + 0.5 * 0.2)


def test_zero_and_negative_values():
    h = histogram(-3, 0, 3)
    assert (h.negative, h.zero_count, h.positive) == ({2: 1}, 1, {2: 1})
    assert h.quantile(0.5) == 0.0
    assert h.quantile(0.25) == pytest.approx(-1.5)
    assert h.quantile(0) == -3
    h = histogram(-100, -7, -3, -1)
    # Estimates in value order: -100 (min), -16/3 (-7 in -(4, 8]), -8/3 (-3 in -(2, 4]), -1 (max).
    assert h.quantile(1 / 3) == pytest.approx(-16 / 3)
    assert h.quantile(2 / 3) == pytest.approx(-8 / 3)


def test_count_weights_the_value():
    h = LogHistogram(1 / 3)
    h.add(5, count=3)
    h.add(100)
    assert (h.count, h.sum, h.positive) == (4, 115, {3: 3, 7: 1})
    assert h.quantile(0.5) == pytest.approx(16 / 3)


def test_summary():
    s = histogram(3, 5, 6, 7, 100).summary()
    assert s["count"] == 5
    assert s["mean"] == pytest.approx(24.2)
    assert s["p50"] == pytest.approx(16 / 3)
    assert s["p90"] == pytest.approx(186.4 / 3)
    assert s["p99"] == pytest.approx(288.64 / 3)                 # rank 3.96
    assert s["max"] == 100


def test_empty():
    h = LogHistogram()
    assert h.quantile(0.5) is None
    assert h.summary() == {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}


def test_merge_equals_adding_everything():
    a, b = histogram(3, 5), histogram(6, 7, 100, -1, 0)
    a.offsets = {"latency": 7}
    a.merge(b)
    whole = histogram(3, 5, 6, 7, 100, -1, 0)
    whole.offsets = {"latency": 7}
    assert a == whole
    empty = LogHistogram(1 / 3)
    empty.merge(b)
    assert empty == b
    b.merge(LogHistogram(1 / 3))
    assert b == histogram(6, 7, 100, -1, 0)


def test_bad_input():
    h = LogHistogram()
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            h.add(bad)
    with pytest.raises(ValueError):
        h.add(1.0, count=0)
    with pytest.raises(ValueError):
        h.quantile(1.5)
    with pytest.raises(ValueError):
        h.merge(LogHistogram(0.02))
    with pytest.raises(ValueError):
        LogHistogram(0)
    assert h.count == 0


def test_avro_round_trip():
    h = histogram(3, 5, 6, 7, 100, -2, 0, relative_error=0.01)
    h.offsets = {"latency": 41, "ticker": 9}
    back = round_trip(h)
    assert back == h
    assert back.summary() == h.summary()
    assert back.to_record()["positive"] == {str(i): c for i, c in h.positive.items()}
    assert round_trip(LogHistogram()) == LogHistogram()
