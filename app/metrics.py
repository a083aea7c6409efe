"""What GET /metrics computes, without I/O: histograms at fixed boundaries from log histograms,
counters kept monotonic over windowed tables and over objects replaced per venue session, and
label sets (docs/architecture.md#d13-metrics).

agents/metrics.py reads the agents' own counters at scrape time and hands them to these
pieces; nothing here is called per event (docs/architecture.md#d1-the-hot-path-stays-in-one-process).

**Buckets.** A ``LogHistogram`` (app/analytics/histogram.py) keeps log-spaced buckets with
a 1% relative error; Prometheus wants counts at fixed upper bounds in seconds, the same for
every series so that they can be summed and compared. A sample counts under a bound when
its log bucket's representative value (within 1% of every value in the bucket, the estimate
``LogHistogram.quantile`` starts from) is at or below it: only a sample within 1% of a bound
can land on the wrong side of it. The placement depends on the log bucket alone, not on the
histogram's min and max, so that a bucket's count only grows as samples are added (each
``_bucket`` series is a counter). Zeros and negative values (a clock behind the exchange's)
count under every bound. ``_sum`` and ``_count`` are exact.

**Windowed tables.** ``stage_latency_1m`` holds one histogram per key and minute, and drops
a window once it has expired (CRYPTICS_ANALYTICS_MINUTE_WINDOWS_KEPT) or its partition has
moved to another worker. A sum over the live windows alone would go down whenever a window
left, which Prometheus reads as a counter reset. ``WindowedHistograms`` instead adds to each
series what each window has grown by since it was last seen: a window that leaves keeps what
it counted, and a series never decreases while the worker runs. (A window seen, gone when its
partition moved away, and held again after a second rebalance brought the partition back
counts twice on this worker: rebalances are rare, and the distribution's shape is unaffected.)
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

from prometheus_client.utils import floatToGoString

from app.analytics.histogram import LogHistogram

#: Upper bounds (seconds) of every latency histogram /metrics serves: 10 µs to 10 s, three per
#: decade (the tick → order path is hundreds of µs, an ack's round trip milliseconds, the
#: persistence stage up to seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005,
    0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05,
    0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
    10.0,
)

#: Units of the analytics' and the quote agent's latency histograms per second (they hold µs).
MICROSECONDS = 1e6


def bound_label(bound: float) -> str:
    """The ``le`` label of an upper bound, written as prometheus-client writes its own."""
    return floatToGoString(bound)


@dataclass
class BucketCounts:
    """Samples per fixed bucket: ``counts[k]`` for ``bounds[k-1] < v <= bounds[k]``, the last
    one for ``v > bounds[-1]`` (+Inf); the exact ``sum`` (seconds) and ``count``."""

    counts: list[int]
    sum: float = 0.0
    count: int = 0

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> BucketCounts:
        return cls([0] * (len(bounds) + 1))

    def add(self, other: BucketCounts) -> None:
        if len(other.counts) != len(self.counts):
            raise ValueError(f"cannot add {len(other.counts)} buckets to {len(self.counts)}")
        for k, n in enumerate(other.counts):
            self.counts[k] += n
        self.sum += other.sum
        self.count += other.count

    def subtract(self, other: BucketCounts) -> None:
        """Take ``other`` away again (what a window had counted when it was last seen)."""
        if len(other.counts) != len(self.counts):
            raise ValueError(f"cannot subtract {len(other.counts)} buckets from {len(self.counts)}")
        for k, n in enumerate(other.counts):
            self.counts[k] -= n
        self.sum -= other.sum
        self.count -= other.count

    def copy(self) -> BucketCounts:
        return BucketCounts(list(self.counts), self.sum, self.count)

    def cumulative(self, bounds: Sequence[float]) -> list[tuple[str, float]]:
        """Prometheus' ``_bucket`` samples: (le, samples at or below it), ending with +Inf = count."""
        if len(bounds) + 1 != len(self.counts):
            raise ValueError(f"{len(bounds)} bounds for {len(self.counts)} buckets")
        out, running = [], 0
        for bound, n in zip(bounds, self.counts):
            running += n
            out.append((bound_label(bound), float(running)))
        out.append(("+Inf", float(running + self.counts[-1])))
        return out


class _Slots:
    """Which fixed bucket each log bucket's representative value falls in, for one relative
    error, set of bounds and unit; computed once per log-bucket index and kept."""

    def __init__(self, relative_error: float, bounds: Sequence[float], per_second: float) -> None:
        self.gamma = (1.0 + relative_error) / (1.0 - relative_error)
        self.scale = 2.0 / (self.gamma + 1.0)
        self.bounds = tuple(bounds)
        self.per_second = per_second
        self.positive: dict[Any, int] = {}
        self.negative: dict[Any, int] = {}

    def of_value(self, value: float) -> int:
        return bisect_left(self.bounds, value / self.per_second)

    def of_bucket(self, index: Any, negative: bool) -> int:
        """The slot of log bucket ``index`` (an int, or its text as stored in a record)."""
        cache = self.negative if negative else self.positive
        slot = cache.get(index)
        if slot is None:
            representative = self.scale * self.gamma ** int(index)
            slot = cache[index] = self.of_value(-representative if negative else representative)
        return slot


_slots_cache: dict[tuple, _Slots] = {}


def _slots(relative_error: float, bounds: Sequence[float], per_second: float) -> _Slots:
    key = (relative_error, tuple(bounds), per_second)
    slots = _slots_cache.get(key)
    if slots is None:
        if any(b >= c for b, c in zip(key[1], key[1][1:])):
            raise ValueError(f"bounds must ascend: {bounds!r}")
        slots = _slots_cache[key] = _Slots(relative_error, bounds, per_second)
    return slots


def _counts(relative_error: float, count: int, total: float, positive: Mapping[Any, int],
            negative: Mapping[Any, int], zeros: int, bounds: Sequence[float], per_second: float) -> BucketCounts:
    slots = _slots(relative_error, bounds, per_second)
    out = BucketCounts([0] * (len(bounds) + 1), total / per_second, count)
    counts = out.counts
    for buckets, is_negative in ((positive, False), (negative, True)):
        for index, n in buckets.items():
            counts[slots.of_bucket(index, is_negative)] += n
    if zeros:
        counts[slots.of_value(0.0)] += zeros
    return out


def bucket_counts(histogram: LogHistogram, bounds: Sequence[float] = LATENCY_BUCKETS,
                  per_second: float = MICROSECONDS) -> BucketCounts:
    """``histogram`` (values in units of 1/``per_second`` s) counted at ``bounds`` (seconds,
    ascending). Where each sample is counted: the module docstring."""
    h = histogram
    return _counts(h.relative_error, h.count, h.sum, h.positive, h.negative, h.zero_count, bounds, per_second)


def histogram_record_counts(record: Mapping[str, Any], bounds: Sequence[float] = LATENCY_BUCKETS,
                            per_second: float = MICROSECONDS) -> BucketCounts:
    """``bucket_counts`` of a stored ``latency_histogram`` record (schemas/latency_histogram/v1.avsc),
    read as it is (bucket indices as text), without building the histogram."""
    r = record
    return _counts(r["relative_error"], r["count"], r["sum"], r["positive"], r["negative"], r["zero_count"],
                   bounds, per_second)


S = TypeVar("S", bound=Hashable)


class WindowedHistograms(Generic[S]):
    """Per series, the histograms of a windowed table's windows added up, monotonic while the
    process runs (module docstring).

    Each window is ``observe``d with its series and its stored record; its growth since it was
    last seen is added to its series (histograms only grow), so a window that leaves the table
    keeps what it counted. A window whose ``count`` has not moved is not converted again.
    ``forget_except(keys)`` drops the memory of windows no longer in the table (their counts
    stay in the totals); ``update`` does all of it for one pass over the table."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS, per_second: float = MICROSECONDS,
                 convert: Optional[Callable[[Mapping[str, Any]], BucketCounts]] = None) -> None:
        self.bounds = tuple(bounds)
        self._convert = convert or (lambda record: histogram_record_counts(record, self.bounds, per_second))
        #: window key -> (the record's count, its BucketCounts), as last seen.
        self._seen: dict[Hashable, tuple[int, BucketCounts]] = {}
        self._totals: dict[S, BucketCounts] = {}

    def observe(self, key: Hashable, series: S, record: Mapping[str, Any]) -> None:
        count = record["count"]
        seen = self._seen.get(key)
        if seen is not None and count <= seen[0]:
            return  # unchanged (or an older copy of it: nothing to add)
        counts = self._convert(record)
        total = self._totals.get(series)
        if total is None:
            total = self._totals[series] = BucketCounts.empty(self.bounds)
        total.add(counts)
        if seen is not None:
            total.subtract(seen[1])
        self._seen[key] = (count, counts)

    def forget_except(self, keys: Iterable[Hashable]) -> None:
        live = set(keys)
        for key in [k for k in self._seen if k not in live]:
            del self._seen[key]

    def totals(self) -> dict[S, BucketCounts]:
        return {series: counts.copy() for series, counts in self._totals.items()}

    def update(self, windows: Iterable[tuple[Hashable, S, Mapping[str, Any]]]) -> dict[S, BucketCounts]:
        keys = []
        for key, series, record in windows:
            self.observe(key, series, record)
            keys.append(key)
        self.forget_except(keys)
        return self.totals()


def flatten_counts(stats: Mapping[str, Any]) -> dict[tuple, float]:
    """A stats dictionary's numbers by key path: ``{"inserts": 3, "errors_by_code": {4: 1}}`` →
    ``{("inserts",): 3, ("errors_by_code", 4): 1}``. Booleans, None and text are left out."""
    out: dict[tuple, float] = {}
    for key, value in stats.items():
        if isinstance(value, Mapping):
            for sub, number in value.items():
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    out[(key, sub)] = number
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[(key,)] = value
    return out


class CarriedCounters:
    """Counters of an object that is replaced now and then (one order gateway and one Thalex
    client per venue session), kept monotonic over the process: when the object changes (or
    goes), the old one's final counts are carried into the totals.

    ``totals(current, read)``: ``current`` is the object now (None between sessions), ``read``
    gives its counts by key. The object is held until the next change, so the counts carried
    are its last ones, not those of the last scrape."""

    def __init__(self) -> None:
        self._current: Any = None
        self._read: Optional[Callable[[Any], Mapping[Hashable, float]]] = None
        self._carried: Counter = Counter()

    def totals(self, current: Any, read: Callable[[Any], Mapping[Hashable, float]]) -> Counter:
        if current is not self._current:
            if self._current is not None and self._read is not None:
                self._carried.update(self._read(self._current))
            self._current = current
        self._read = read
        out = Counter(self._carried)
        if current is not None:
            out.update(read(current))
        return out


@dataclass(frozen=True)
class Labelled:
    """One sample of a family: its label values (in the family's label order) and value."""

    labels: tuple[str, ...]
    value: float


@dataclass
class LabelSet:
    """Samples of one family keyed by label values, values added for repeated label sets
    (two stream objects of one agent, two stats keys mapped to one series)."""

    names: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def add(self, value: float, *labels: Any) -> None:
        if len(labels) != len(self.names):
            raise ValueError(f"{len(labels)} label values for {self.names}")
        key = tuple(label_value(v) for v in labels)
        self.values[key] = self.values.get(key, 0.0) + float(value)

    def __iter__(self) -> Iterator[Labelled]:
        for key in sorted(self.values):
            yield Labelled(key, self.values[key])


def label_value(value: Any) -> str:
    """A label value: text as it is, numbers without a trailing ``.0`` (partition 2, code 4),
    enums by their value, None as the empty string."""
    if value is None:
        return ""
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):  # an Enum
        value = value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def split_stage_key(key: str) -> tuple[str, str]:
    """``stage_latency_1m``'s ``<instrument>|<stage>`` → (instrument, stage)."""
    instrument, sep, stage = key.rpartition("|")
    if not sep:
        return "", key
    return instrument, stage


def lag(highwater: Optional[int], committed: Optional[int]) -> Optional[int]:
    """Records of a partition not yet committed: high watermark minus the committed offset
    (the next offset to read), never below 0; None while either is unknown."""
    if highwater is None or committed is None:
        return None
    return max(0, highwater - committed)
