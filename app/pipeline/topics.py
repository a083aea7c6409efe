"""Kafka topic names and their creation (docs/architecture.md#d3-kafka-topics).

Topics are created by the project, before workers start, with the configured
partition count; the project never relies on broker auto-creation (Tansu would
give auto-created topics 4 partitions, breaking co-partitioning of tables).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from app.security import kafka_client_kwargs
from models.registry import RECORDS, topic_name

log = logging.getLogger(__name__)

#: The wiring heartbeat (agents/heartbeat.py): proves the worker consumes and produces.
HEARTBEAT = topic_name("system", "heartbeat")

#: Every pipeline topic the project creates up front: one per record of models/registry.py.
PIPELINE_TOPICS: tuple[str, ...] = tuple(record.topic for record in RECORDS.values())


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` or ``tansu://h:p`` → ``h1:9092,h2:9092`` for aiokafka."""
    rest = broker_url.split("://", 1)[1]
    return ",".join(part.strip().rstrip("/") for part in rest.replace(";", ",").split(",") if part.strip())


@dataclass(frozen=True)
class TopicReport:
    created: tuple[str, ...]
    existing: tuple[str, ...]


class TopicError(RuntimeError):
    """The pipeline's topics are not as configured: nothing may start on them."""


class TopicMismatch(TopicError):
    """An existing topic has a partition count other than the configured one."""


class TopicsRefused(TopicError):
    """The broker refused to create topics; ``refused`` maps each to the broker's error.
    (aiokafka's ``create_topics`` returns the errors per topic instead of raising.)"""

    def __init__(self, refused: dict[str, str], created: Sequence[str]) -> None:
        lines = "; ".join(f"{topic}: {error}" for topic, error in sorted(refused.items()))
        super().__init__(f"the broker refused {len(refused)} topic{'s' if len(refused) > 1 else ''}: {lines}"
                         + (f" (created: {', '.join(created)})" if created else ""))
        self.refused, self.created = dict(refused), tuple(created)


def refused_topics(response) -> dict[str, str]:
    """A CreateTopics response's refusals, topic → "ERROR_NAME (code N): message"; a topic
    that exists already (another process made it between our list and create) is no refusal."""
    refused = {}
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        name = for_code(code).__name__
        refused[topic] = f"{name} (code {code})" + (f": {message}" if message else "")
    return refused


async def ensure_topics(
    broker_url: str, names: Iterable[str], partitions: int, replication: int = 1
) -> TopicReport:
    """Create the missing topics; check that existing ones have ``partitions`` partitions.
    Raises TopicError: TopicsRefused, naming each topic and the broker's error, if any was not
    created; TopicMismatch for an existing topic with another partition count."""
    wanted: Sequence[str] = list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url), client_id="cryptics-admin",
                                **kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            try:
                response = await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            except TopicAlreadyExistsError:
                response = None  # another process created it between our list and create
            refused = refused_topics(response) if response is not None else {}
            if refused:
                raise TopicsRefused(refused, [n for n in missing if n not in refused])
        present = [n for n in wanted if n in existing]
        if present:
            described = await admin.describe_topics(present)
            wrong = {
                d["topic"]: len(d["partitions"]) for d in described if len(d["partitions"]) != partitions
            }
            if wrong:
                raise TopicMismatch(
                    f"topics exist with a partition count other than {partitions}: {wrong}. "
                    "Tables need co-partitioned topics (docs/architecture.md#d3-kafka-topics): recreate them or set "
                    "CRYPTICS_TOPIC_PARTITIONS to match."
                )
        for name in missing:
            log.info("created topic %s with %d partitions", name, partitions)
        return TopicReport(created=tuple(missing), existing=tuple(present))
    finally:
        await admin.close()


async def read_until_quiet(bootstrap: str, topic: str) -> list:
    """Every record on ``topic`` (raw aiokafka records), read from the start until the broker
    has had nothing more for three polls: for tests and benchmarks that count a topic.

    Quiet, not the end offset: Tansu under-reports end offsets (docs/architecture.md#d6-embedded-broker-tansu)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **kafka_client_kwargs())
    await consumer.start()
    out: list = []
    try:
        idle = 0
        while idle < 3:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


async def partition_starts(bootstrap: str, group_id: str, partitions: Iterable[tuple[str, int]],
                           timeout: float = 3.0) -> dict[tuple[str, int], int]:
    """Where ``group_id``'s consumer starts each partition: the offset the group committed, or
    the log's first offset when nothing is committed. Read with a client of its own that joins
    no group (the analytics' continuity guard, app/analytics/continuity.py)."""
    tps = [TopicPartition(topic, partition) for topic, partition in partitions]
    if not tps:
        return {}
    client = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
                              client_id=f"{group_id}-partition-starts", **kafka_client_kwargs())

    async def read() -> dict[tuple[str, int], int]:
        await client.start()
        first = await client.beginning_offsets(tps)
        starts = {}
        for tp in tps:
            committed = await client.committed(tp)
            starts[(tp.topic, tp.partition)] = committed if committed is not None and committed >= 0 else first[tp]
        return starts

    try:
        return await asyncio.wait_for(read(), timeout)
    finally:
        await client.stop()
