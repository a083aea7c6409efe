"""The deferred producer behind produce_later (app/pipeline/producer.py): records built and encoded only
once the event loop is done with the current callback, sent in batches per topic-partition in
order, one failure costing nothing else. Pure scheduling and batching logic: the aiokafka
producer is replaced by a recorder (the real path to Kafka is in test_market_data,
test_quoting and test_persistence)."""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from aiokafka.partitioner import DefaultPartitioner

from app.pipeline.producer import DeferredProducer

PARTITIONS = {0, 1, 2}


class Batch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[Optional[bytes], bytes]] = []

    def append(self, *, key: Optional[bytes], value: bytes, timestamp: Optional[int]) -> Optional[object]:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class Producer:
    """Records what the deferred producer hands to aiokafka."""

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self.sent: list[tuple[str, int, list]] = []
        self.fail_next_delivery = False

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
            delivered.set_result(None)
        return delivered

    def values(self, topic: Optional[str] = None) -> list[bytes]:
        return [value for t, _p, records in self.sent if topic in (None, t) for _k, value in records]


def encode(name: str, value: Any) -> tuple[str, bytes]:
    if value == "unencodable":
        raise ValueError("schema says no")
    return f"topic.{name}", value.encode()


def deferred(producer: Producer) -> DeferredProducer:
    async def get() -> Producer:
        return producer
    return DeferredProducer(encode, get)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_records_wait_for_the_current_callback_then_go_out_in_order():
    producer = Producer()
    out = deferred(producer)
    built = []

    def build() -> str:
        built.append("ticker")
        return "t1"

    out.produce("ticker", "BTC-PERPETUAL", build)
    out.produce("index", "BTCUSD", "i1")
    out.produce("ticker", "BTC-PERPETUAL", "t2")
    # Nothing is built or sent while the caller (the hot path) is still running.
    assert built == [] and producer.sent == []
    await settle()
    assert built == ["ticker"]
    assert producer.values("topic.ticker") == [b"t1", b"t2"] and producer.values("topic.index") == [b"i1"]
    # One batch per topic-partition, each at the partition Kafka's default partitioner gives the key.
    partitioner = DefaultPartitioner()
    for topic, partition, records in producer.sent:
        for key, _value in records:
            assert partition == partitioner(key, sorted(PARTITIONS), sorted(PARTITIONS))
    assert len(producer.sent) == 2
    out.produce("quote", "BTC-PERPETUAL", "q1")  # a new burst is a new round
    await settle()
    assert producer.values("topic.quote") == [b"q1"]
    assert out.stats["records"] == 4 and out.stats["batches"] == 3


async def test_a_record_that_cannot_be_built_or_encoded_costs_nothing_else():
    producer = Producer()
    out = deferred(producer)
    errors: list[Exception] = []

    def broken() -> str:
        raise KeyError("delta")

    out.produce("ticker", "a", broken, errors.append)
    out.produce("ticker", "a", "fine")
    out.produce("ticker", "a", "unencodable", errors.append)
    out.produce("ticker", "a", "also fine")
    await settle()
    assert producer.values() == [b"fine", b"also fine"]
    assert [type(e) for e in errors] == [KeyError, ValueError]
    assert out.stats["encode_errors"] == 2


async def test_a_full_batch_is_sent_and_a_new_one_started_keeping_the_order():
    producer = Producer(capacity=3)
    out = deferred(producer)
    for i in range(8):
        out.produce("ticker", "BTC-PERPETUAL", f"t{i}")
    await settle()
    assert [len(records) for _t, _p, records in producer.sent] == [3, 3, 2]
    assert producer.values() == [f"t{i}".encode() for i in range(8)]
    assert len({partition for _t, partition, _r in producer.sent}) == 1


async def test_records_queued_while_a_round_is_sent_go_in_the_next_one():
    producer = Producer()
    out = deferred(producer)
    release = asyncio.Event()
    original = producer.send_batch

    async def slow_send_batch(batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        await release.wait()
        return await original(batch, topic, partition=partition)
    producer.send_batch = slow_send_batch  # type: ignore[method-assign]
    out.produce("ticker", "k", "first")
    await settle()
    out.produce("ticker", "k", "second")  # the sender is still waiting on the first batch
    out.produce("ticker", "k", "third")
    await settle()
    assert producer.sent == []
    release.set()
    await settle()
    assert producer.values() == [b"first", b"second", b"third"]
    assert [len(records) for _t, _p, records in producer.sent] == [1, 2]


async def test_a_failed_delivery_is_counted_and_later_records_still_go_out():
    producer = Producer()
    out = deferred(producer)
    producer.fail_next_delivery = True
    out.produce("ticker", "k", "lost")
    await settle()
    assert out.stats["delivery_errors"] == 1
    out.produce("ticker", "k", "next")
    await settle()
    assert producer.values()[-1] == b"next" and out.stats["delivery_errors"] == 1


async def test_flush_hands_over_what_is_still_queued():
    producer = Producer()
    out = deferred(producer)
    out.produce("ticker", "k", "a")
    out.produce("ticker", None, "no key")
    await out.flush()  # no event loop turn in between: flush itself encodes and sends
    assert sorted(producer.values()) == [b"a", b"no key"]
