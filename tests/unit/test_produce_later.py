"""The deferred producer behind produce_later (app/pipeline/producer.py): records built and encoded only
once the event loop is done with the current callback, sent in batches per topic-partition in
order, one failure costing nothing else; and produce_confirmed's deliveries, completed with where
each record landed or with why it did not. Pure scheduling and batching logic: the aiokafka
producer is replaced by a recorder (the real path to Kafka is in test_market_data,
test_quoting, test_persistence and test_deadletter)."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from app.pipeline.producer import DeferredProducer
from tests.unit.fake_kafka import PARTITIONS, Batch, Producer, deferred_on, settle


def encode(name: str, value: Any) -> tuple[str, bytes]:
    if value == "unencodable":
        raise ValueError("schema says no")
    return f"topic.{name}", value.encode()


def deferred(producer: Producer) -> DeferredProducer:
    return deferred_on(producer, encode)


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


async def test_a_confirmed_record_learns_where_it_landed_in_order_with_the_others():
    producer = Producer()
    out = deferred(producer)
    out.produce("dead_letter", "k", "before")
    first = out.produce_confirmed("dead_letter", "k", "first")
    out.produce("dead_letter", "k", "between")
    second = out.produce_confirmed("dead_letter", "k", "second")
    assert not first.done() and producer.sent == []  # queued, not yet encoded: same order as produce
    first_at, second_at = await first, await second
    assert producer.values() == [b"before", b"first", b"between", b"second"] and len(producer.sent) == 1
    topic, partition, _records = producer.sent[0]
    # The batch starts at offset 100 of its partition: each record at the batch's base + its place in it.
    assert (first_at.topic, first_at.partition, first_at.offset) == (topic, partition, 101)
    assert (second_at.topic, second_at.partition, second_at.offset) == (topic, partition, 103)
    assert out.stats["records"] == 4 and out.stats["batches"] == 1 and out.stats["delivery_errors"] == 0


async def test_a_confirmed_record_can_name_its_partition_and_keep_its_key_bytes():
    producer = Producer()
    out = deferred(producer)
    key = b"\xff\x00 not text"
    delivered = await out.produce_confirmed("ticker", key, "replayed", partition=2)
    assert producer.sent == [("topic.ticker", 2, [(key, b"replayed")])]
    assert delivered.partition == 2 and delivered.offset == 100


async def test_a_failed_delivery_is_reported_to_its_waiters_and_only_to_them():
    producer = Producer()
    out = deferred(producer)
    producer.fail_next_delivery = True  # the first batch handed over: partition 0's
    lost = [out.produce_confirmed("dead_letter", "k", f"lost{i}", partition=0) for i in range(2)]
    elsewhere = out.produce_confirmed("dead_letter", "k", "elsewhere", partition=1)
    for delivery in lost:
        with pytest.raises(ConnectionError, match="broker gone"):
            await delivery
    assert (await elsewhere).offset == 100  # its own batch was delivered, and it is told so
    assert out.stats["delivery_errors"] == 1 and out.stats["batches"] == 2
    later = await out.produce_confirmed("dead_letter", "k", "later", partition=0)
    assert later.offset == 100 and producer.values()[-1] == b"later"


async def test_a_confirmed_record_that_cannot_be_encoded_fails_its_delivery_alone():
    producer = Producer()
    out = deferred(producer)
    bad = out.produce_confirmed("dead_letter", "k", "unencodable")
    good = out.produce_confirmed("dead_letter", "k", "fine")
    with pytest.raises(ValueError, match="schema says no"):
        await bad
    assert (await good).offset == 100
    assert out.stats["encode_errors"] == 1 and producer.values() == [b"fine"]


async def test_a_producer_failure_fails_every_delivery_it_drops():
    producer = Producer()
    out = deferred(producer)

    async def refuse(batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        raise KafkaTimeoutError("buffer full for the whole request timeout")
    producer.send_batch = refuse  # type: ignore[method-assign]
    deliveries = [out.produce_confirmed("dead_letter", key, "v") for key in ("a", "b", "c")]
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    assert all(isinstance(outcome, KafkaTimeoutError) for outcome in outcomes)
    assert out.stats["delivery_errors"] == 1


async def test_a_partition_lookup_failure_fails_the_deliveries_of_its_round():
    producer = Producer()
    out = deferred(producer)

    async def unknown_topic(topic: str) -> set[int]:
        raise KafkaTimeoutError("no metadata for the topic")
    producer.partitions_for = unknown_topic  # type: ignore[method-assign]
    placed = out.produce_confirmed("dead_letter", "k", "placed", partition=0)
    unplaced = out.produce_confirmed("dead_letter", "k", "unplaced")
    for delivery in (placed, unplaced):
        with pytest.raises(KafkaTimeoutError):
            await delivery
    assert producer.sent == [] and out.stats["delivery_errors"] == 1


async def test_a_record_larger_than_a_batch_fails_its_delivery():
    producer = Producer(capacity=0)
    out = deferred(producer)
    with pytest.raises(MessageSizeTooLargeError):
        await out.produce_confirmed("dead_letter", "k", "huge")
    assert out.stats["delivery_errors"] == 1


async def test_a_waiter_that_gave_up_costs_the_others_nothing():
    producer = Producer()
    out = deferred(producer)
    abandoned = out.produce_confirmed("dead_letter", "k", "abandoned")
    kept = out.produce_confirmed("dead_letter", "k", "kept")
    abandoned.cancel()  # e.g. asyncio.wait_for timed out
    assert (await kept).offset == 101  # the abandoned record still went out first
    assert producer.values() == [b"abandoned", b"kept"]


async def test_a_batch_the_producer_cancels_is_a_failed_delivery_not_a_cancelled_waiter():
    producer = Producer()
    out = deferred(producer)

    async def cancelled(batch: Batch, topic: str, *, partition: int) -> asyncio.Future:
        sent = asyncio.get_running_loop().create_future()
        sent.cancel()  # e.g. the producer stopping with the batch in its buffer
        return sent
    producer.send_batch = cancelled  # type: ignore[method-assign]
    with pytest.raises(KafkaError, match="cancelled"):
        await out.produce_confirmed("dead_letter", "k", "v", partition=1)
