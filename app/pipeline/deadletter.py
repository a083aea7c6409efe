"""Dead letters: read them back, pick some, and put them back on their source topic.

The persistence sink (app/pipeline/sink/) sends every record it cannot write to the dead-letter
topic (``models.registry.record("dead_letter").topic``) with its coordinates, key, raw
value bytes and the error (docs/architecture.md#d8-persistence-semantics). Once the cause
is fixed (a schema, a table constraint, a row builder), this module replays them:

- ``read_dead_letters``: every dead letter on the topic, decoded through the schema
  registry, each with its own partition and offset on the dead-letter topic (its id,
  ``PARTITION:OFFSET``). It reads to the end of the topic as it was when reading began,
  then stops.
- ``select``: narrow them by source topic, stage, target table or id.
- ``replay``: produce each one's original key and value bytes, unchanged, to its
  original partition of its source topic (acks=all, waiting for each delivery), so the
  persistence agents consume it again. A dead letter without a value (stage ``decode``,
  "the record has no value") has nothing to replay and is skipped with that reason.
  ``replay`` runs in its own process (the CLI's), with an aiokafka producer of its own
  behind the same ``DeferredProducer`` the worker uses (app/pipeline/producer.py).

Replaying is safe to repeat: the sink writes with ``ON CONFLICT DO NOTHING`` on natural
keys (docs/architecture.md#d8-persistence-semantics), so a record replayed twice, or one
that was written after all, gives no second row. A replayed record that still fails becomes a new dead letter; the old
ones stay on the topic (dead letters are never deleted, only read).

``cryptics deadletter list`` and ``cryptics deadletter replay`` (app/cli.py) are the
command-line face of this module.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Collection, Iterable, Optional, Sequence

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from schema_registry.client.errors import ClientError

from app.pipeline.codec import AvroCodec
from app.pipeline.producer import DeferredProducer
from app.pipeline.tansu_compat import corrected_end_offsets
from app.pipeline.topics import bootstrap_servers
from app.security import kafka_client_kwargs
from models.dead_letter import DeadLetter

#: How long reading the dead-letter topic to its end may take before we give up.
READ_TIMEOUT = 60.0
#: How long one replayed record may wait for its delivery.
DELIVERY_TIMEOUT = 30.0


class DeadLetterError(RuntimeError):
    """Something a user can act on: an unknown id, a topic that is not there, a timeout."""


@dataclass(frozen=True)
class LetterId:
    """Where a dead letter sits on the dead-letter topic: ``PARTITION:OFFSET``."""

    partition: int
    offset: int

    _PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")

    @classmethod
    def parse(cls, text: str) -> "LetterId":
        match = cls._PATTERN.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not PARTITION:OFFSET (two non-negative integers, e.g. 0:42)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter as read back: its place on the dead-letter topic and its content."""

    id: LetterId
    letter: DeadLetter

    @property
    def replayable(self) -> bool:
        return self.letter.value is not None

    @property
    def source(self) -> str:
        """``topic[partition]@offset`` of the record that failed."""
        return f"{self.letter.source_topic}[{self.letter.source_partition}]@{self.letter.source_offset}"

    def as_json(self) -> dict[str, Any]:
        """Everything but the value bytes, which are given as their length (null: no value)."""
        d = self.letter
        key_text: Optional[str] = None
        if d.key is not None:
            try:
                key_text = d.key.decode("utf-8")
            except UnicodeDecodeError:
                key_text = None  # not text: key_hex still says exactly what it is
        return {
            "id": str(self.id), "partition": self.id.partition, "offset": self.id.offset,
            "failed_at": _iso(d.failed_at), "stage": d.stage,
            "source_topic": d.source_topic, "source_partition": d.source_partition,
            "source_offset": d.source_offset, "target_table": d.target_table, "error": d.error,
            "key": key_text, "key_hex": d.key.hex() if d.key is not None else None,
            "value_length": len(d.value) if d.value is not None else None,
        }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True)
class ReplayOutcome:
    """What happened to one selected dead letter."""

    stored: StoredLetter
    #: ``replayed``, ``would replay`` (dry run) or ``skipped``.
    status: str
    #: Where the record landed on its source topic (replayed only).
    partition: Optional[int] = None
    offset: Optional[int] = None
    #: Why it was skipped.
    reason: Optional[str] = None

    def describe(self) -> str:
        s = self.stored
        if self.status == "skipped":
            return f"skipped {s.id}: {self.reason}"
        target = f"{s.letter.source_topic}[{s.letter.source_partition}]"
        landed = f"{target}@{self.offset}" if self.offset is not None else target
        key = s.letter.key.decode("utf-8", "backslashreplace") if s.letter.key is not None else None
        return (f"{self.status} {s.id} (from {s.source}, stage {s.letter.stage}) -> {landed}: "
                f"key {key!r}, {len(s.letter.value or b'')} value bytes")


# -- reading --------------------------------------------------------------------------------

def dead_letter_topic() -> str:
    from models.registry import record

    return record("dead_letter").topic


async def topic_partitions(broker_url: str, names: Iterable[str]) -> dict[str, set[int]]:
    """The partitions of each of ``names`` that exists; missing topics are left out.

    Existence is checked with a topic listing first because asking a broker about a
    topic by name can auto-create it (with Tansu's 4 partitions,
    docs/architecture.md#d3-kafka-topics).
    """
    wanted = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url), client_id="cryptics-deadletter",
                                **kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [n for n in wanted if n in existing]
        if not present:
            return {}
        described = await admin.describe_topics(present)
        return {d["topic"]: {p["partition"] for p in d["partitions"]} for d in described}
    finally:
        await admin.close()


async def _end_offsets(broker_url: str, consumer: AIOKafkaConsumer,
                       partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    reported = await consumer.end_offsets(list(partitions))
    if broker_url.startswith("tansu://"):
        # Tansu under-reports ListOffsets(LATEST) after multi-record batches
        # (docs/architecture.md#d6-embedded-broker-tansu); the dead letters of one sink
        # batch are produced together, so this is the usual case.
        return await corrected_end_offsets(bootstrap_servers(broker_url), reported)
    return dict(reported)


async def read_dead_letters(broker_url: str, registry_url: str, timeout: float = READ_TIMEOUT) -> list[StoredLetter]:
    """Every dead letter on the dead-letter topic, oldest first per partition.

    Reads each partition from its beginning up to its end offset taken when reading
    starts (dead letters arriving meanwhile are left for the next read), then stops.
    """
    from models.registry import record

    r = record("dead_letter")
    partitions = (await topic_partitions(broker_url, [r.topic])).get(r.topic)
    if not partitions:
        return []  # no topic, no dead letters (workers create it before they run)
    tps = [TopicPartition(r.topic, p) for p in sorted(partitions)]
    codec = AvroCodec(r.subject, r.schema, registry_url)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker_url), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id="cryptics-deadletter", **kafka_client_kwargs())
    await consumer.start()
    try:
        ends = await _end_offsets(broker_url, consumer, tps)
        pending = [tp for tp in tps if ends[tp] > 0]
        if not pending:
            return []
        consumer.assign(pending)
        await consumer.seek_to_beginning(*pending)
        letters: list[StoredLetter] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending:
            if loop.time() > deadline:
                where = {str(tp.partition): (await consumer.position(tp), ends[tp]) for tp in pending}
                raise DeadLetterError(f"reading {r.topic} did not reach its end within {timeout:.0f} s "
                                      f"(partition: (position, end) {where})")
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        continue  # arrived after we started: not part of this read
                    letters.append(StoredLetter(LetterId(tp.partition, m.offset), _decode(codec, m)))
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.remove(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    letters.sort(key=lambda s: (s.id.partition, s.id.offset))
    return letters


def _decode(codec: AvroCodec, message: Any) -> DeadLetter:
    where = f"dead letter {message.partition}:{message.offset}"
    if message.value is None:
        raise DeadLetterError(f"{where} has no value")
    try:
        return DeadLetter(**codec.loads(message.value))
    except ValueError as exc:  # WireFormatError included: not a dead letter of any known schema
        raise DeadLetterError(f"{where} does not decode: {exc}") from None
    except (httpx.HTTPError, ClientError) as exc:
        raise DeadLetterError(f"{where}: the schema registry at {codec.registry_url} did not answer: "
                              f"{type(exc).__name__}: {exc}") from None


# -- selecting ------------------------------------------------------------------------------

def select(
    letters: Iterable[StoredLetter],
    *,
    topics: Collection[str] = (),
    stages: Collection[str] = (),
    tables: Collection[str] = (),
    ids: Collection[LetterId] = (),
) -> list[StoredLetter]:
    """The letters matching every filter given; several values of one filter match any of them."""
    return [
        s for s in letters
        if (not topics or s.letter.source_topic in topics)
        and (not stages or s.letter.stage in stages)
        and (not tables or s.letter.target_table in tables)
        and (not ids or s.id in ids)
    ]


def pick(letters: Sequence[StoredLetter], ids: Sequence[LetterId]) -> list[StoredLetter]:
    """The letters with exactly these ids, in the order given; an unknown id is an error."""
    by_id = {s.id: s for s in letters}
    unknown = [str(i) for i in ids if i not in by_id]
    if unknown:
        raise DeadLetterError(f"no dead letter at {', '.join(unknown)} on {dead_letter_topic()} "
                              "(`cryptics deadletter list` shows the ids)")
    return [by_id[i] for i in dict.fromkeys(ids)]


# -- replaying ------------------------------------------------------------------------------

async def replay(broker_url: str, chosen: Sequence[StoredLetter], *, dry_run: bool = False) -> list[ReplayOutcome]:
    """Put each chosen letter's key and value bytes back on its source topic and partition.

    Each record is delivered (acks=all) before the next is sent, so on an error every
    outcome before it is a fact. Letters that cannot be replayed are skipped, not fatal:
    no value, or a source topic/partition that does not exist (producing to a missing
    topic could auto-create it with the wrong partition count,
    docs/architecture.md#d3-kafka-topics).
    """
    partitions = await topic_partitions(broker_url, {s.letter.source_topic for s in chosen})
    plan: list[ReplayOutcome] = []
    for s in chosen:
        d = s.letter
        if d.value is None:
            plan.append(ReplayOutcome(s, "skipped", reason=(
                f"no value to replay (stage {d.stage}: {d.error}; the record at {s.source} had none)")))
        elif d.source_topic not in partitions:
            plan.append(ReplayOutcome(s, "skipped", reason=(
                f"source topic {d.source_topic} does not exist (`cryptics topics create` creates it)")))
        elif d.source_partition not in partitions[d.source_topic]:
            plan.append(ReplayOutcome(s, "skipped", reason=(
                f"source topic {d.source_topic} has no partition {d.source_partition} "
                f"(it has {len(partitions[d.source_topic])})")))
        else:
            plan.append(ReplayOutcome(s, "would replay"))
    if dry_run or not any(o.status == "would replay" for o in plan):
        return plan

    # Not idempotent: aiokafka's idempotent producer fails against Tansu
    # (docs/architecture.md#d6-embedded-broker-tansu), and a duplicate from a producer
    # retry is absorbed by the tables' natural keys anyway.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker_url), acks="all",
                                enable_idempotence=False, client_id="cryptics-deadletter-replay",
                                **kafka_client_kwargs())
    await producer.start()

    async def started() -> AIOKafkaProducer:
        return producer

    out = DeferredProducer(_as_they_are, started)
    done: list[ReplayOutcome] = []
    try:
        for outcome in plan:
            if outcome.status != "would replay":
                done.append(outcome)
                continue
            d = outcome.stored.letter
            try:
                delivered = await asyncio.wait_for(
                    out.produce_confirmed(d.source_topic, d.key, d.value, partition=d.source_partition),
                    DELIVERY_TIMEOUT)
            except Exception as exc:
                replayed = [str(o.stored.id) for o in done if o.status == "replayed"]
                raise DeadLetterError(
                    f"replaying {outcome.stored.id} to {d.source_topic}[{d.source_partition}] failed: "
                    f"{type(exc).__name__}: {exc}; replayed before it: {replayed or 'none'}") from None
            done.append(ReplayOutcome(outcome.stored, "replayed", partition=delivered.partition,
                                      offset=delivered.offset))
    finally:
        await producer.stop()
    return done


def _as_they_are(topic: str, value: bytes) -> tuple[str, bytes]:
    """The replay's encoder: a record is named by its topic and its value is bytes already."""
    return topic, value
