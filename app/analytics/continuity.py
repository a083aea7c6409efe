"""Each input partition reaches the analytics states in offset order, with no offset left out.

The states skip an event whose offset is not above the last one they applied (the redelivery
rule, docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once). That rule is
exact only if the consumer hands over each partition's records without a hole: an event
delivered after a later one of its partition would be taken for a redelivery and left out.
So this guard checks every event against the offset its partition expects next:

- in order: applied;
- a *rewind* (an offset at or below the last one seen): a redelivery, applied (the states
  skip what they have) and counted;
- a *gap* (an offset past the one expected): the consumer skipped records. The event is held
  back, and the caller seeks the partition back to the offset expected (``Seek``); every
  event of the partition is then held back until that offset arrives, after which the
  partition goes on in order (``resynced``). Held events are not lost: the seek delivers
  them again. If the offset has not arrived after ``resync_timeout`` seconds (the records
  are gone from the log), the partition goes on from the first offset it was seen to have
  after the hole, sought back to again when that one has been held (``GaveUp``; the caller
  also asks ``overdue`` once in a while, for a partition that has no new event to notice the
  timeout by). What it gave up on is counted in ``skipped``: the only offsets the tables may
  lack.

Where a partition starts: the offset the consumer group committed for it, or the log's first
offset when nothing is committed (``start_at``, when the partition is assigned); a hole at
the head of an assignment is then a gap like any other. A partition the worker gives up in a
rebalance is forgotten (another worker may take its records meanwhile); one it keeps goes on
where it stopped, and one that was waiting for a hole is sought back again (``seek_again``):
the consumer restarts it where the group committed, which may be past the hole.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Optional, Union

TP = tuple[str, int]

#: Seconds a partition waits for the offset it was sought back to before it goes on without it.
RESYNC_TIMEOUT_S = 10.0


class Seek(NamedTuple):
    """Hold the event back and seek its partition to ``offset`` (the one expected)."""

    topic: str
    partition: int
    offset: int


class GaveUp(NamedTuple):
    """The offsets from ``missing`` up to ``resume`` did not come again in time: the partition
    goes on from ``resume``. When that is the event's own offset, apply it; when it is lower (an
    offset held back while the partition waited), hold the event and seek back to ``resume``."""

    topic: str
    partition: int
    missing: int
    resume: int


class Waiting(NamedTuple):
    """A partition sought back to ``target``: until when it waits (None: to be sought back
    again), and the lowest offset after the hole delivered meanwhile (None: none yet)."""

    target: int
    deadline: Optional[float]
    first_seen: Optional[int]


APPLY, HOLD = "apply", "hold"
Verdict = Union[str, Seek, GaveUp]


@dataclass
class OffsetContinuity:
    resync_timeout: float = RESYNC_TIMEOUT_S
    #: (topic, partition) -> the offset expected next.
    expected: dict[TP, int] = field(default_factory=dict)
    #: (topic, partition) -> what it waits for, while it waits for a hole.
    resyncing: dict[TP, Waiting] = field(default_factory=dict)
    #: Holes found, per topic (each one sought back).
    gaps: Counter = field(default_factory=Counter)
    #: Holes closed: the offset sought back to arrived.
    resynced: Counter = field(default_factory=Counter)
    #: Events held back while their partition waited for a redelivery (they come again).
    held: Counter = field(default_factory=Counter)
    #: Offsets given up on after ``resync_timeout``: the tables do not have them.
    skipped: Counter = field(default_factory=Counter)
    rewinds: Counter = field(default_factory=Counter)

    def start_at(self, starts: Mapping[TP, int]) -> None:
        """Where newly assigned partitions start (committed offset, or the log's first); a
        partition this worker kept goes on where it was."""
        for tp, offset in starts.items():
            self.expected.setdefault(tp, offset)

    def admit(self, topic: str, partition: int, offset: int, now: float) -> Verdict:
        """APPLY the event, HOLD it back (its partition waits for a redelivery), ``Seek``: hold
        it back and seek the partition to the offset expected, or ``GaveUp``: apply it, the
        offsets before it are not coming. ``now``: a monotonic clock."""
        tp = (topic, partition)
        waiting = self.resyncing.get(tp)
        if waiting is not None:
            target, deadline, first_seen = waiting
            if offset > target:
                first_seen = offset if first_seen is None else min(first_seen, offset)
            if offset > target and deadline is None:  # to be sought back again (seek_again)
                self.held[topic] += 1
                self.resyncing[tp] = Waiting(target, now + self.resync_timeout, first_seen)
                return Seek(topic, partition, target)
            if offset > target and now < deadline:
                self.held[topic] += 1
                self.resyncing[tp] = Waiting(target, deadline, first_seen)
                return HOLD
            if offset > target and first_seen < offset:
                # Not coming; but the offsets from ``first_seen`` on were held: fetched again.
                self.held[topic] += 1
                return self._give_up(tp, target, first_seen, now)
            del self.resyncing[tp]
            self.expected[tp] = offset + 1
            if offset == target:
                self.resynced[topic] += 1
            elif offset > target:
                self.skipped[topic] += offset - target  # not coming: the partition goes on without them
                return GaveUp(topic, partition, target, offset)
            else:
                self.rewinds[topic] += 1  # older than the hole: the seek went further back
            return APPLY
        want = self.expected.get(tp)
        if want is None or offset == want:
            self.expected[tp] = offset + 1
            return APPLY
        if offset < want:
            self.rewinds[topic] += 1
            # A rewind restarts the count from where the consumer now is: the records after it
            # are the redelivered ones, then the new ones, in order.
            self.expected[tp] = offset + 1
            return APPLY
        self.gaps[topic] += 1
        self.held[topic] += 1
        self.resyncing[tp] = Waiting(want, now + self.resync_timeout, offset)
        return Seek(topic, partition, want)

    def overdue(self, now: float) -> list[GaveUp]:
        """The partitions whose wait has timed out although no event came to say so (a quiet
        partition, every event of it held): each goes on from the first offset it was seen to
        have after its hole; the caller seeks it back there."""
        due = [(tp, target, first_seen) for tp, (target, deadline, first_seen) in self.resyncing.items()
               if deadline is not None and now >= deadline and first_seen is not None]
        return [self._give_up(tp, target, first_seen, now) for tp, target, first_seen in due]

    def _give_up(self, tp: TP, target: int, resume: int, now: float) -> GaveUp:
        """Give up the offsets ``target`` up to ``resume`` - 1; wait for ``resume``, which the log has."""
        self.skipped[tp[0]] += resume - target
        self.resyncing[tp] = Waiting(resume, now + self.resync_timeout, None)
        return GaveUp(tp[0], tp[1], target, resume)

    def seek_again(self, tps: Iterable[TP]) -> None:
        """A rebalance kept these partitions: the consumer now starts them where the group
        committed, which may be past a hole still waited for (held events are acknowledged).
        The next event of each one that is still waiting asks for the seek back again."""
        for tp in tps:
            waiting = self.resyncing.get(tp)
            if waiting is not None:
                self.resyncing[tp] = waiting._replace(deadline=None)

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.expected.pop(tp, None)
            self.resyncing.pop(tp, None)

    def counters(self) -> dict[str, dict[str, int]]:
        """What GET /analytics/ shows: holes found, closed, events held back, offsets given up,
        rewinds, and the partitions waiting for a hole now (their events are held)."""
        return {"offset_gaps": dict(self.gaps), "offset_gaps_resynced": dict(self.resynced),
                "offsets_held": dict(self.held), "offsets_skipped": dict(self.skipped),
                "offset_rewinds": dict(self.rewinds),
                "partitions_waiting": dict(Counter(topic for topic, _ in self.resyncing))}
