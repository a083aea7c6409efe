"""Latency distributions in constant space: a log-bucket histogram with a relative-error bound.

One histogram per (key, stage, minute) replaces the raw samples that ``latency_1m`` and
``stage_latency_1m`` (timescale/0004_views.sql) sort for their percentiles, so a Faust
table can hold it and merge it. The buckets are DDSketch's: with ``a`` the relative error
and ``gamma = (1 + a) / (1 - a)``, a value ``v > 0`` falls in bucket
``i = ceil(log(v) / log(gamma))``, the interval ``(gamma**(i-1), gamma**i]``, whose
representative ``2 * gamma**i / (gamma + 1)`` is within ``a`` of every value in it.
Negative values go to the mirrored buckets of ``-v``, zeros to their own count; count, sum,
min and max are exact.

Percentiles follow PostgreSQL's ``percentile_cont``, so the numbers agree with the views:
for ``n`` samples, rank ``q * (n - 1)`` interpolates linearly between the samples at the
floor and the ceiling of the rank, each replaced by its bucket's estimate (clamped to
[min, max]; the smallest and largest samples are min and max themselves).

State: ``schemas/latency_histogram/v1.avsc`` (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional

_log = math.log
_ceil = math.ceil
_isfinite = math.isfinite


class LogHistogram:
    """Log-bucket histogram of one stream of values (latencies in µs, but any unit works)."""

    __slots__ = ("relative_error", "gamma", "_inv_log_gamma", "positive", "negative", "zero_count",
                 "count", "sum", "min", "max", "offsets")

    def __init__(self, relative_error: float = 0.01) -> None:
        if not 0.0 < relative_error < 1.0:
            raise ValueError(f"relative_error must be in (0, 1), not {relative_error!r}")
        self.relative_error = relative_error
        self.gamma = (1.0 + relative_error) / (1.0 - relative_error)
        # A multiplication per sample instead of a division.
        self._inv_log_gamma = 1.0 / _log(self.gamma)
        #: Bucket index -> count, for values > 0 and for the magnitudes of values < 0.
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        #: Smallest and largest value added; None while empty.
        self.min: Optional[float] = None
        self.max: Optional[float] = None
        #: Last Kafka offset applied per source record name; carried, not interpreted here.
        self.offsets: dict[str, int] = {}

    def add(self, value: float, count: int = 1) -> None:
        """Add ``count`` samples of ``value``; ValueError for a non-finite value or a count < 1."""
        if not _isfinite(value):
            raise ValueError(f"not a finite value: {value!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        if value > 0:
            i = _ceil(_log(value) * self._inv_log_gamma)
            buckets = self.positive
            buckets[i] = buckets.get(i, 0) + count
        elif value < 0:
            i = _ceil(_log(-value) * self._inv_log_gamma)
            buckets = self.negative
            buckets[i] = buckets.get(i, 0) + count
        else:
            self.zero_count += count
        if self.count:
            if value < self.min:
                self.min = value
            elif value > self.max:
                self.max = value
        else:
            self.min = self.max = value
        self.count += count
        self.sum += value * count

    def merge(self, other: LogHistogram) -> None:
        """Add every sample of ``other``; ValueError if its relative error differs. Offsets are
        not merged: they belong to the key the state is kept for."""
        if other.relative_error != self.relative_error:
            raise ValueError(f"cannot merge relative error {other.relative_error} into {self.relative_error}")
        if not other.count:
            return
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for i, n in theirs.items():
                mine[i] = mine.get(i, 0) + n
        self.zero_count += other.zero_count
        if self.count:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        else:
            self.min, self.max = other.min, other.max
        self.count += other.count
        self.sum += other.sum

    @property
    def mean(self) -> Optional[float]:
        """Exact mean; None while empty."""
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> Optional[float]:
        """The ``percentile_cont(q)`` estimate (see the module docstring); None while empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Iterable[float]) -> list[Optional[float]]:
        """``quantile(q)`` for each q, walking the buckets once."""
        qs = list(qs)
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], not {q!r}")
        n = self.count
        if not n:
            return [None] * len(qs)
        ranks = [q * (n - 1) for q in qs]
        wanted = sorted({k for r in ranks for k in (math.floor(r), math.ceil(r))})
        estimates = self._sample_estimates(wanted)
        results = []
        for r in ranks:
            lo, hi = math.floor(r), math.ceil(r)
            low = estimates[lo]
            results.append(low if hi == lo else low + (estimates[hi] - low) * (r - lo))
        return results

    def _sample_estimates(self, sorted_ranks: list[int]) -> dict[int, float]:
        """Estimate of the sample at each 0-based rank (ascending list), in value order."""
        gamma, n = self.gamma, self.count
        scale = 2.0 / (gamma + 1.0)
        # Buckets from the smallest value up: most negative first, then zero, then positive.
        ordered = [(-scale * gamma ** i, c) for i, c in sorted(self.negative.items(), reverse=True)]
        if self.zero_count:
            ordered.append((0.0, self.zero_count))
        ordered.extend((scale * gamma ** i, c) for i, c in sorted(self.positive.items()))
        out: dict[int, float] = {}
        it = iter(sorted_ranks)
        rank = next(it, None)
        seen = 0
        for estimate, c in ordered:
            seen += c
            while rank is not None and rank < seen:
                if rank == 0:
                    out[rank] = self.min
                elif rank == n - 1:
                    out[rank] = self.max
                else:
                    out[rank] = min(max(estimate, self.min), self.max)
                rank = next(it, None)
            if rank is None:
                break
        return out

    def summary(self) -> dict[str, Any]:
        """count, mean, p50, p90, p99 and max (None while empty), as the views give them."""
        p50, p90, p99 = self.quantiles((0.5, 0.9, 0.99))
        return {"count": self.count, "mean": self.mean, "p50": p50, "p90": p90, "p99": p99, "max": self.max}

    def to_record(self) -> dict[str, Any]:
        """The ``latency_histogram`` record (bucket indices as map keys: Avro maps key by string)."""
        return {
            "relative_error": self.relative_error,
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "max": self.max,
            "zero_count": self.zero_count,
            "positive": {str(i): c for i, c in self.positive.items()},
            "negative": {str(i): c for i, c in self.negative.items()},
            "offsets": dict(self.offsets),
        }

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> LogHistogram:
        """The histogram a ``latency_histogram`` record describes."""
        h = cls(d["relative_error"])
        h.count = d["count"]
        h.sum = d["sum"]
        h.min = d["min"]
        h.max = d["max"]
        h.zero_count = d["zero_count"]
        h.positive = {int(i): c for i, c in d["positive"].items()}
        h.negative = {int(i): c for i, c in d["negative"].items()}
        h.offsets = dict(d.get("offsets") or {})
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogHistogram):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return (f"LogHistogram(relative_error={self.relative_error}, count={self.count}, sum={self.sum}, "
                f"min={self.min}, max={self.max}, buckets={len(self.positive) + len(self.negative)})")
