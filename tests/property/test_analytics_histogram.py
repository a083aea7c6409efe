"""The latency histogram (app/analytics/histogram.py) over random latency lists: its
percentiles are within the relative error of PostgreSQL's percentile_cont on the raw
samples, and merging equals adding everything to one histogram. Examples:
tests/unit/test_analytics_histogram.py.
"""
from __future__ import annotations

import io
import math

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics.histogram import LogHistogram
from models import schemas

SCHEMA = fastavro.parse_schema(schemas.load("latency_histogram"))

# Durations in µs, from sub-millisecond to minutes; clustered lists come from the small range.
latencies = st.lists(st.integers(1, 100_000_000) | st.integers(1, 200), min_size=1, max_size=300)
relative_errors = st.sampled_from([0.005, 0.01, 0.02, 0.05])


def percentile_cont(values: list[int], q: float) -> float:
    """PostgreSQL's percentile_cont: interpolate at rank q * (n - 1) of the sorted values."""
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def histogram(values: list[int], relative_error: float) -> LogHistogram:
    h = LogHistogram(relative_error)
    for v in values:
        h.add(v)
    return h


@settings(max_examples=400)
@given(latencies, relative_errors)
def test_quantiles_within_relative_error_of_percentile_cont(values, relative_error):
    h = histogram(values, relative_error)
    for q in (0.5, 0.9, 0.99):
        exact = percentile_cont(values, q)
        # The bound is exact; the margin covers the float rounding of log() at a bucket edge.
        assert abs(h.quantile(q) - exact) <= relative_error * exact * (1 + 1e-9), (q, exact, h.quantile(q))
    assert h.quantile(0) == min(values)
    assert h.quantile(1) == max(values)
    assert (h.count, h.sum, h.min, h.max) == (len(values), sum(values), min(values), max(values))
    assert h.summary()["mean"] == sum(values) / len(values)


@settings(max_examples=300)
@given(latencies, latencies, relative_errors)
def test_merge_equals_adding_everything(first, second, relative_error):
    merged = histogram(first, relative_error)
    merged.merge(histogram(second, relative_error))
    # Integer samples: the sums are exact, so the states are equal field by field.
    assert merged == histogram(first + second, relative_error)


@settings(max_examples=200)
@given(st.lists(st.integers(-10**9, 10**9), max_size=50), relative_errors,
       st.dictionaries(st.sampled_from(["latency", "ticker", "book"]), st.integers(0, 2**62), max_size=3))
def test_avro_round_trip(values, relative_error, offsets):
    h = histogram(values, relative_error)
    h.offsets = offsets
    out = io.BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, h.to_record())
    out.seek(0)
    assert LogHistogram.from_record(fastavro.schemaless_reader(out, SCHEMA)) == h
