"""Deferred, batched Kafka produces: the one way onto Kafka for what the worker publishes
(docs/architecture.md#d1-the-hot-path-stays-in-one-process, docs/architecture.md#d3-kafka-topics).

``DeferredProducer.produce(name, key, value)`` is what ``app.faust_app.produce_later`` calls.
It costs the caller an append to a list. Two stages follow:

1. **Encode**, in a ``call_soon`` callback: once the event loop has finished what it is
   doing now (the venue's burst of notifications, a quote decision), every record
   queued meanwhile is built (a value may be a function that builds it) and encoded
   (Avro through its topic's codec). A record that cannot be built or encoded is logged
   and its ``on_error`` told; the others go on.
2. **Send**, in one task: the encoded records are appended to one aiokafka batch per
   topic-partition and each batch is handed to the producer with ``send_batch``. The
   partition of a key is computed once, with aiokafka's default partitioner (murmur2, as
   Faust's ``send_soon`` and every Kafka client do), so a key keeps its partition. A record
   may also name its partition (a replayed dead letter goes back where it came from).

Why not Faust's ``topic.send_soon``: per record it built a pending message and a future,
went through Faust's producer buffer (an asyncio queue) and its sensors, then awaited
aiokafka's ``send``, which looks the topic's partitions up again (a new set per call).
On the whole pipeline from the venue that was ~40 µs per record of the worker's
~190 (benchmarks/bench_sink/, part 3); a batch append is a few µs.

Order: records of one topic-partition reach Kafka in the order they were produced (one
encode queue, one sender, batches submitted in order).

Delivery. ``produce`` is fire and forget: delivery failures (the broker gone for longer
than the producer's request timeout) are logged and counted in ``stats`` (shown by the
source's /market-data/ view), as Faust did for ``send_soon``. A caller that must know
uses ``produce_confirmed`` instead: the same queue (so the same order), and a future
that completes once the batch holding the record is delivered, with the record's
``RecordMetadata`` (topic, partition, offset), or with the exception that kept it off
Kafka (not encodable, the producer failed, the broker did not take the batch). Only
batches holding such records keep a list of waiters: ``produce`` pays nothing for it.
The persistence agent waits like this for a batch's dead letters before committing the
batch; ``cryptics deadletter replay`` for each record it puts back.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, deque
from typing import Any, Awaitable, Callable, Optional, Union

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import RecordMetadata

log = logging.getLogger(__name__)

#: A record's key: text (sent as UTF-8), bytes (sent as they are) or none.
Key = Union[str, bytes, None]
#: Told when a fire-and-forget record cannot be built or encoded.
OnError = Callable[[Exception], None]
#: Completed with the record's RecordMetadata (None with acks=0) or the reason it is not on Kafka.
Delivery = asyncio.Future[Optional[RecordMetadata]]
#: (topic name, key bytes, value bytes, partition or None, delivery or None) ready to send.
Encoded = tuple[str, Optional[bytes], bytes, Optional[int], Optional[Delivery]]
#: Builds a record's topic name and value bytes: (record name, value) → (topic, bytes).
Encoder = Callable[[str, Any], tuple[str, bytes]]


class _Batch:
    """One aiokafka batch for one topic-partition, and who waits for which of its records."""

    __slots__ = ("builder", "partition", "topic", "waiters")

    def __init__(self, topic: str, partition: int, builder: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.builder = builder
        #: (the record's offset within the batch, its delivery): produce_confirmed records only.
        self.waiters: list[tuple[int, Delivery]] = []

    def settle(self, sent: asyncio.Future) -> None:
        """``send_batch``'s future is done: tell each waiter where its record landed, or why not."""
        for relative_offset, delivery in self.waiters:
            if delivery.done():  # the waiter gave up (cancelled, timed out)
                continue
            if sent.cancelled():  # the producer gave the batch up (stopping): not delivered
                delivery.set_exception(KafkaError(f"the batch for {self.topic}[{self.partition}] was cancelled"))
            elif sent.exception() is not None:
                delivery.set_exception(sent.exception())
            else:
                first = sent.result()  # the batch's RecordMetadata: where its first record landed
                delivery.set_result(None if first is None else first._replace(offset=first.offset + relative_offset))

    def fail(self, exc: BaseException) -> None:
        for _offset, delivery in self.waiters:
            _fail(delivery, exc)


def _fail(delivery: Optional[Delivery], exc: BaseException) -> None:
    if delivery is not None and not delivery.done():
        delivery.set_exception(exc)


class DeferredProducer:
    """The one way onto Kafka for records a process publishes itself (not Faust agents' tables)."""

    def __init__(self, encode: Encoder, get_producer: Callable[[], Awaitable[Any]]) -> None:
        self._encode = encode
        self._get_producer = get_producer
        #: (record name, key, value or builder, on_error, partition, delivery) waiting for the encode stage.
        self._pending: list[tuple[str, Key, Any, Optional[OnError], Optional[int], Optional[Delivery]]] = []
        #: Encoded records waiting for the sender.
        self._encoded: deque[Encoded] = deque()
        self._sender: Optional[asyncio.Task] = None
        self._partitions: dict[tuple[str, Optional[bytes]], int] = {}
        self._partitioner = DefaultPartitioner()
        #: records (encoded), encode_errors, batches, delivery_errors.
        self.stats: Counter[str] = Counter()

    def queue_depth(self) -> dict[str, int]:
        """Records waiting now: ``encode`` (queued, not yet built and encoded), ``send`` (encoded,
        not yet handed to the Kafka producer). GET /metrics reads it."""
        return {"encode": len(self._pending), "send": len(self._encoded)}

    def produce(self, name: str, key: Key, value: Any, on_error: Optional[OnError] = None) -> None:
        """Queue a record, fire and forget (the hot path: an append to a list)."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._encode_pending)
        self._pending.append((name, key, value, on_error, None, None))

    def produce_confirmed(self, name: str, key: Key, value: Any, partition: Optional[int] = None) -> Delivery:
        """Queue a record now (in order with ``produce``) and return its delivery: a future that
        completes with the record's RecordMetadata once the broker has it, or with the exception
        that kept it off Kafka. ``partition``: this one rather than the key's."""
        loop = asyncio.get_running_loop()
        delivery = loop.create_future()
        if not self._pending:
            loop.call_soon(self._encode_pending)
        self._pending.append((name, key, value, None, partition, delivery))
        return delivery

    def _encode_pending(self) -> None:
        pending, self._pending = self._pending, []
        for name, key, value, on_error, partition, delivery in pending:
            try:
                topic, data = self._encode(name, value() if callable(value) else value)
            except Exception as exc:  # one record that cannot be built or encoded must not cost the others
                log.exception("producing a %s record (key %r) failed", name, key)
                self.stats["encode_errors"] += 1
                if on_error is not None:
                    on_error(exc)
                _fail(delivery, exc)
                continue
            self._encoded.append((topic, key.encode() if isinstance(key, str) else key, data, partition, delivery))
            self.stats["records"] += 1
        if self._encoded and self._sender is None:
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        unsent: list[_Batch] = []
        try:
            producer = await self._get_producer()
            while self._encoded:
                # Everything encoded so far; what is encoded while these are handed over waits
                # for the next round.
                encoded, self._encoded = self._encoded, deque()
                unsent = await self._batches(producer, encoded)
                while unsent:
                    batch = unsent[0]
                    sent = await producer.send_batch(batch.builder, batch.topic, partition=batch.partition)
                    del unsent[0]
                    sent.add_done_callback(functools.partial(self._delivered, batch))
                    self.stats["batches"] += 1
        except Exception as exc:  # e.g. the producer's buffer stayed full for its whole request timeout
            queued, self._encoded = self._encoded, deque()
            for batch in unsent:
                batch.fail(exc)
            for *_record, delivery in queued:
                _fail(delivery, exc)
            self.stats["delivery_errors"] += 1
            log.exception("the Kafka producer failed: this round's unsent batches and %d queued records "
                          "are dropped", len(queued))
        finally:
            self._sender = None
            if self._encoded:  # encoded after the loop's last check
                self._sender = asyncio.ensure_future(self._send())

    async def _batches(self, producer: Any, encoded: deque[Encoded]) -> list[_Batch]:
        """``encoded`` in batches, one open batch per topic-partition; full ones first, in order."""
        full: list[_Batch] = []
        batches: dict[tuple[str, int], _Batch] = {}
        try:
            for topic, key, value, partition, delivery in encoded:
                if partition is None:
                    partition = self._partitions.get((topic, key))
                    if partition is None:
                        partition = await self._partition_of(producer, topic, key)
                batch = batches.get((topic, partition))
                if batch is None:
                    batch = batches[(topic, partition)] = _Batch(topic, partition, producer.create_batch())
                appended = batch.builder.append(key=key, value=value, timestamp=None)
                if appended is None:  # full: it goes as it is, the record starts the next one
                    full.append(batch)
                    batch = batches[(topic, partition)] = _Batch(topic, partition, producer.create_batch())
                    appended = batch.builder.append(key=key, value=value, timestamp=None)
                    if appended is None:
                        self.stats["delivery_errors"] += 1
                        log.error("a %d-byte record for %s is larger than a batch: dropped", len(value), topic)
                        _fail(delivery, MessageSizeTooLargeError(f"a {len(value)}-byte record is larger than a batch"))
                        continue
                if delivery is not None:
                    batch.waiters.append((appended.offset, delivery))
        except Exception as exc:  # nothing of this round is handed over yet: all of it is lost
            for *_record, delivery in encoded:
                _fail(delivery, exc)
            raise
        return full + list(batches.values())

    async def _partition_of(self, producer: Any, topic: str, key: Optional[bytes]) -> int:
        partitions = sorted(await producer.partitions_for(topic))
        partition = self._partitioner(key, partitions, partitions)
        if key is not None:  # a record without a key goes to a random partition every time
            self._partitions[(topic, key)] = partition
        return partition

    def _delivered(self, batch: _Batch, sent: asyncio.Future) -> None:
        if not sent.cancelled() and sent.exception() is not None:
            self.stats["delivery_errors"] += 1
            log.error("a batch of records was not delivered to Kafka: %s", sent.exception())
        batch.settle(sent)

    async def flush(self) -> None:
        """Hand everything queued so far to the producer (the worker calls this before it stops)."""
        if self._pending:
            self._encode_pending()
        while self._sender is not None:
            await asyncio.shield(self._sender)
