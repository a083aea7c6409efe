"""Whether each input partition reaches the analytics agent in offset order, with no offset left out.

The states skip an event whose offset is not above the last one they applied (the redelivery
rule, docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once). That rule is
exact only if the consumer hands over each partition's records without a hole: an event
delivered after a later one of its partition would be taken for a redelivery and left out.
This watch tells an operator when that happened: a *gap* (an offset after the next one
expected) means records were skipped by the consumer, a *rewind* (an offset at or below the
last one seen) a redelivery, which the states skip as they should. Both are counted; nothing is
changed. A partition the worker gives up in a rebalance is forgotten, since another worker may
take its records in between; one it keeps must go on where it stopped.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass
class OffsetContinuity:
    #: (topic, partition) -> the offset expected next.
    expected: dict[tuple[str, int], int] = field(default_factory=dict)
    gaps: Counter = field(default_factory=Counter)
    #: Offsets skipped over by the gaps, per topic.
    skipped: Counter = field(default_factory=Counter)
    rewinds: Counter = field(default_factory=Counter)

    def observe(self, topic: str, partition: int, offset: int) -> Optional[tuple[str, int]]:
        """Record one delivered offset; ("gap", expected) or ("rewind", expected) when it is not
        the one expected next, None when it is (or the partition is new here)."""
        tp = (topic, partition)
        want = self.expected.get(tp)
        if want is None or offset == want:
            self.expected[tp] = offset + 1
            return None
        if offset > want:
            self.gaps[topic] += 1
            self.skipped[topic] += offset - want
            self.expected[tp] = offset + 1
            return "gap", want
        self.rewinds[topic] += 1
        # A rewind restarts the count from where the consumer now is: the records after it are
        # the redelivered ones, then the new ones, in order.
        self.expected[tp] = offset + 1
        return "rewind", want

    def forget(self, tps: Iterable[tuple[str, int]]) -> None:
        for tp in tps:
            self.expected.pop(tp, None)
