"""A stand-in for the aiokafka producer under app/pipeline/producer.py's DeferredProducer: it
records the batches handed to it and delivers them at once (or fails the next one), with
offsets and RecordMetadata as aiokafka gives them. Used by test_produce_later and
test_dead_letter_delivery."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, Callable, Optional

from aiokafka.structs import RecordMetadata, TopicPartition

from app.pipeline.producer import DeferredProducer

PARTITIONS = {0, 1, 2}


class Batch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[Optional[bytes], bytes]] = []

    def append(self, *, key: Optional[bytes], value: bytes, timestamp: Optional[int]) -> Optional[SimpleNamespace]:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return SimpleNamespace(offset=len(self.records) - 1)  # like aiokafka: the offset within the batch


class Producer:
    """Records what the deferred producer hands to aiokafka."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, list]] = []
        self.fail_next_delivery = False
        #: The next offset of each topic-partition (the log has earlier records: not 0).
        self.offsets: dict[tuple[str, int], int] = {}

    async def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def create_batch(self) -> Batch:
        return Batch(self.capacity)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append((topic, partition, batch.records))
        delivered = asyncio.get_running_loop().create_future()
        if self.fail_next_delivery:
            self.fail_next_delivery = False
            delivered.set_exception(ConnectionError("broker gone"))
        else:
            base = self.offsets.get((topic, partition), 100)
            self.offsets[(topic, partition)] = base + len(batch.records)
            delivered.set_result(RecordMetadata(topic, partition, TopicPartition(topic, partition), base, -1, 0, -1))
        return delivered

    def values(self, topic: Optional[str] = None) -> list[bytes]:
        return [value for t, _p, records in self.sent if topic in (None, t) for _k, value in records]


def deferred_on(producer: Producer, encode: Callable[[str, Any], tuple[str, bytes]]) -> DeferredProducer:
    """A DeferredProducer sending through ``producer``."""
    async def get() -> Producer:
        return producer
    return DeferredProducer(encode, get)


async def settle() -> None:
    """A few turns of the event loop: the encode callback, then the sender task."""
    for _ in range(5):
        await asyncio.sleep(0)
