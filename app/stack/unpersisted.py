"""What the embedded broker would lose if it died now: records produced but not yet persisted
(docs/operations.md#what-a-broker-death-loses).

Tansu keeps topics in memory, so its death takes every record with it. Those already in
PostgreSQL are safe; the others are lost. Once the broker is dead nothing can be asked of
it, so ``UnpersistedWatch`` asks while it lives, every ``interval`` seconds:

- each watched partition's end offset (Tansu under-reports ListOffsets, so the end is
  corrected from the high watermark of a fetch of the last batch, as app/pipeline/tansu_compat.py
  does for Faust);
- the offsets the persistence consumer group (``<app id>-persistence``, agents/persistence.py)
  has committed. The sink commits a batch only after its rows are in, so everything below
  the committed offset is in PostgreSQL.

Per persisted topic, ``end - committed`` is then the number of records not known to be
persisted. As a measure of a loss it errs both ways, by little: rows written whose commit
had not happened yet are counted (they are in the database), and records produced after the
last poll are not (at most ``interval`` of traffic). Records still in a worker's producer
queue never reached the broker and are not counted either. The age of the oldest of them
(to within one poll) is how far persistence ran behind: the unpersisted window.

The dead-letter topic and the Faust changelogs are not persisted at all: a broker death
loses all of them (``LossReport`` counts them apart). The tables restart empty.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Optional

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.security import kafka_client_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicBacklog:
    """One persisted topic at one poll: records on the broker not yet committed by the sink."""

    end: int
    committed: int
    #: Seconds since the first poll that saw the oldest of them (0 when there is none).
    oldest_seconds: float

    @property
    def unpersisted(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class Snapshot:
    """The broker as the last successful poll saw it."""

    #: Wall-clock time (time.time()) of the poll.
    at: float
    persisted: dict[str, TopicBacklog]
    #: Records on the topics nobody persists: the dead letters and the Faust changelogs.
    dead_letters: int
    changelogs: dict[str, int]

    @property
    def unpersisted(self) -> int:
        return sum(t.unpersisted for t in self.persisted.values())

    @property
    def oldest_seconds(self) -> float:
        return max((t.oldest_seconds for t in self.persisted.values() if t.unpersisted), default=0.0)


@dataclass(frozen=True)
class LossReport:
    """What a broker death lost, from the last poll before it."""

    snapshot: Snapshot
    #: Seconds between that poll and the moment the death was noticed.
    staleness: float

    def lines(self) -> list[str]:
        s = self.snapshot
        lost = {topic: b.unpersisted for topic, b in sorted(s.persisted.items()) if b.unpersisted}
        by_topic = ", ".join(f"{topic} {n}" for topic, n in lost.items()) or "none"
        changelog_records = sum(s.changelogs.values())
        return [
            f"lost with the broker: {s.unpersisted} records produced but not yet persisted "
            f"(as of the last poll, {self.staleness:.1f} s before the death was seen; the oldest "
            f"{s.oldest_seconds:.1f} s old): {by_topic}",
            f"lost with the broker: {s.dead_letters} dead letters and {changelog_records} changelog records "
            f"of {len(s.changelogs)} Faust tables (those tables restart empty)",
        ]

    def as_json(self) -> dict:
        s = self.snapshot
        return {
            "at": s.at, "staleness_seconds": round(self.staleness, 3),
            "unpersisted": s.unpersisted, "oldest_seconds": round(s.oldest_seconds, 3),
            "by_topic": {t: b.unpersisted for t, b in sorted(s.persisted.items()) if b.unpersisted},
            "dead_letters": s.dead_letters, "changelog_records": sum(s.changelogs.values()),
        }


@dataclass
class _Partition:
    """The end offsets one partition had at successive polls, from the oldest not yet committed."""

    ends: deque = field(default_factory=deque)  # (wall-clock time, end offset)

    def observe(self, at: float, end: int, committed: int) -> float:
        if not self.ends or self.ends[-1][1] != end:
            self.ends.append((at, end))
        # A poll whose end is at or below the committed offset saw only persisted records.
        while self.ends and self.ends[0][1] <= committed:
            self.ends.popleft()
        return at - self.ends[0][0] if self.ends else 0.0


class UnpersistedWatch:
    """Polls the broker's end offsets and the sink's committed offsets while the broker lives."""

    def __init__(self, bootstrap: str, group: str, persisted_topics: Iterable[str], dead_letter_topic: str,
                 changelog_prefix: str, interval: float = 1.0) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.persisted_topics = tuple(persisted_topics)
        self.dead_letter_topic = dead_letter_topic
        self.changelog_prefix = changelog_prefix
        self.interval = interval
        self.snapshot: Optional[Snapshot] = None
        #: The most records and the longest window seen over the whole run (every broker).
        self.most_unpersisted = 0
        self.longest_seconds = 0.0
        self.polls = 0
        self.failed_polls = 0
        self._ends: Optional[AIOKafkaConsumer] = None
        self._commits: Optional[AIOKafkaConsumer] = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._paused = False
        self._polling: Optional[asyncio.Future] = None

    # -- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; a failed poll (a dead or slow broker) keeps the last snapshot."""
        try:
            while True:
                if not self._paused:
                    self._polling = asyncio.ensure_future(
                        asyncio.wait_for(self.poll(), timeout=max(5.0, 5 * self.interval)))
                    try:
                        await self._polling
                    except asyncio.CancelledError:
                        if asyncio.current_task().cancelling():
                            raise  # we are cancelled ourselves, not just the poll by pause()
                        self.failed_polls += 1
                    except Exception as exc:
                        self.failed_polls += 1
                        log.debug("unpersisted watch: poll failed: %r", exc)
                await asyncio.sleep(self.interval)
        finally:
            await self._close()

    async def pause(self) -> None:
        """Stop polling and drop the connections: the broker died. Nothing may ask a broker
        started on the same port about a topic before the topics are created again, since
        Kafka clients' metadata requests create missing topics (with Tansu's 4 partitions)."""
        self._paused = True
        if self._polling is not None and not self._polling.done():
            self._polling.cancel()
            await asyncio.gather(self._polling, return_exceptions=True)
        await self._close()

    def resume(self) -> None:
        """Poll the new broker, from scratch (the last snapshot stays until the first poll)."""
        self._partitions.clear()
        self._paused = False

    def loss_report(self, now: Optional[float] = None) -> Optional[LossReport]:
        if self.snapshot is None:
            return None
        return LossReport(self.snapshot, (time.time() if now is None else now) - self.snapshot.at)

    # -- one poll --------------------------------------------------------------------------

    async def poll(self) -> Snapshot:
        ends, commits = await self._consumers()
        topics = await ends.topics()
        watched = [t for t in topics if t in self.persisted_topics or t == self.dead_letter_topic
                   or (t.startswith(self.changelog_prefix) and t.endswith("-changelog"))]
        tps = sorted((TopicPartition(t, p) for t in watched for p in ends.partitions_for_topic(t) or ()),
                     key=lambda tp: (tp.topic, tp.partition))
        if set(tps) != ends.assignment():
            ends.assign(tps)
            ends.pause(*tps)
        end = await self._end_offsets(ends, tps)
        at = time.time()
        persisted: dict[str, TopicBacklog] = {}
        for tp in tps:
            if tp.topic not in self.persisted_topics:
                continue
            committed = await commits.committed(tp) or 0
            oldest = self._partitions.setdefault(tp, _Partition()).observe(at, end[tp], committed)
            prior = persisted.get(tp.topic)
            persisted[tp.topic] = TopicBacklog(
                end=end[tp] + (prior.end if prior else 0),
                committed=min(committed, end[tp]) + (prior.committed if prior else 0),
                oldest_seconds=max(oldest, prior.oldest_seconds if prior else 0.0),
            )
        changelogs: dict[str, int] = {}
        for tp in tps:
            if tp.topic.endswith("-changelog"):
                changelogs[tp.topic] = changelogs.get(tp.topic, 0) + end[tp]
        dead_letters = sum(end[tp] for tp in tps if tp.topic == self.dead_letter_topic)
        snapshot = Snapshot(at=at, persisted=persisted, dead_letters=dead_letters, changelogs=changelogs)
        self.snapshot = snapshot
        self.polls += 1
        self.most_unpersisted = max(self.most_unpersisted, snapshot.unpersisted)
        self.longest_seconds = max(self.longest_seconds, snapshot.oldest_seconds)
        return snapshot

    async def _end_offsets(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The real end offsets: ListOffsets, corrected by reading each partition's last batch
        (Tansu answers the last batch's base offset + 1, docs/architecture.md#d6-embedded-broker-tansu)."""
        reported = await consumer.end_offsets(tps) if tps else {}
        result = dict(reported)
        probe = [tp for tp in tps if reported[tp] > 0]
        if not probe:
            return result
        asked_ms = time.time() * 1000
        for tp in probe:
            consumer.seek(tp, reported[tp] - 1)
        consumer.resume(*probe)
        pending = set(probe)
        deadline = time.monotonic() + max(1.0, self.interval)
        try:
            while pending and time.monotonic() < deadline:
                batches = await consumer.getmany(*pending, timeout_ms=100)
                for tp, records in batches.items():
                    if records:
                        result[tp] = max(result[tp], records[-1].offset + 1)
                for tp in list(pending):
                    # A fetch answered since the seek: its high watermark is the end.
                    polled = consumer.last_poll_timestamp(tp)
                    if polled is not None and polled >= asked_ms:
                        result[tp] = max(result[tp], consumer.highwater(tp) or 0)
                        pending.discard(tp)
                        consumer.pause(tp)
        finally:
            consumer.pause(*probe)
        return result

    async def _consumers(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        if self._ends is None or self._commits is None:
            await self._close()
            # Short request timeouts: a poll of a dead broker should fail, not hang for 40 s.
            ends = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    client_id="cryptics-unpersisted-watch", request_timeout_ms=5000,
                                    max_partition_fetch_bytes=1 << 16, **kafka_client_kwargs())
            # A group member of no subscription: it reads the group's commits and never joins.
            commits = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group,
                                       enable_auto_commit=False, client_id="cryptics-unpersisted-watch",
                                       request_timeout_ms=5000, **kafka_client_kwargs())
            try:
                await ends.start()
                await commits.start()
            except BaseException:
                for consumer in (ends, commits):
                    await _stop(consumer)
                raise
            self._ends, self._commits = ends, commits
        return self._ends, self._commits

    async def _close(self) -> None:
        for consumer in (self._ends, self._commits):
            if consumer is not None:
                await _stop(consumer)
        self._ends = self._commits = None


async def _stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), 5)
    except Exception as exc:  # a dead broker: the connections are gone anyway
        log.debug("unpersisted watch: stopping a consumer: %r", exc)
