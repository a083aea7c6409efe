"""Deferred, batched Kafka produces for everything the worker publishes (design D1, D3).

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
   Faust's ``send_soon`` and every Kafka client do), so a key keeps its partition.

Why not Faust's ``topic.send_soon``: per record it built a pending message and a future,
went through Faust's producer buffer (an asyncio queue) and its sensors, then awaited
aiokafka's ``send``, which looks the topic's partitions up again (a new set per call).
On the whole pipeline from the venue that was ~40 µs per record of the worker's
~190 (benchmarks/bench_sink.py part 3); a batch append is a few µs.

Order: records of one topic-partition reach Kafka in the order they were produced (one
encode queue, one sender, batches submitted in order). Delivery failures (the broker
gone for longer than the producer's request timeout) are logged and counted in
``stats`` (shown by the source's /market-data/ view), as Faust did; like ``send_soon``
nobody waits for them.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from typing import Any, Awaitable, Callable, Optional

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger(__name__)

#: (topic name, key bytes or None, value bytes) ready to send.
Encoded = tuple[str, Optional[bytes], bytes]
#: Builds a record's topic name and value bytes: (record name, value) → (topic, bytes).
Encoder = Callable[[str, Any], tuple[str, bytes]]


class DeferredProducer:
    """The worker's one way onto Kafka for records it publishes itself (not Faust agents' tables)."""

    def __init__(self, encode: Encoder, get_producer: Callable[[], Awaitable[Any]]) -> None:
        self._encode = encode
        self._get_producer = get_producer
        #: (record name, key, value or builder, on_error) waiting for the encode stage.
        self._pending: list[tuple[str, Optional[str], Any, Optional[Callable[[Exception], None]]]] = []
        #: Encoded records waiting for the sender.
        self._encoded: deque[Encoded] = deque()
        self._sender: Optional[asyncio.Task] = None
        self._partitions: dict[tuple[str, Optional[bytes]], int] = {}
        self._partitioner = DefaultPartitioner()
        #: records (encoded), encode_errors, batches, delivery_errors.
        self.stats: Counter[str] = Counter()

    def produce(self, name: str, key: Optional[str], value: Any,
                on_error: Optional[Callable[[Exception], None]] = None) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._encode_pending)
        self._pending.append((name, key, value, on_error))

    def _encode_pending(self) -> None:
        pending, self._pending = self._pending, []
        for name, key, value, on_error in pending:
            try:
                topic, data = self._encode(name, value() if callable(value) else value)
            except Exception as exc:  # one record that cannot be built or encoded must not cost the others
                log.exception("producing a %s record (key %r) failed", name, key)
                self.stats["encode_errors"] += 1
                if on_error is not None:
                    on_error(exc)
                continue
            self._encoded.append((topic, None if key is None else key.encode(), data))
            self.stats["records"] += 1
        if self._encoded and self._sender is None:
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            producer = await self._get_producer()
            while self._encoded:
                # Everything encoded so far, into one batch per topic-partition; what is encoded
                # while these are handed over waits for the next round.
                batches: dict[tuple[str, int], Any] = {}
                submitted: list[tuple[str, int, Any]] = []
                encoded, self._encoded = self._encoded, deque()
                for topic, key, value in encoded:
                    partition = self._partitions.get((topic, key))
                    if partition is None:
                        partition = await self._partition_of(producer, topic, key)
                    batch = batches.get((topic, partition))
                    if batch is None:
                        batch = batches[(topic, partition)] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:  # full
                        submitted.append((topic, partition, batch))
                        batch = batches[(topic, partition)] = producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            self.stats["delivery_errors"] += 1
                            log.error("a %d-byte record for %s is larger than a batch: dropped", len(value), topic)
                submitted.extend((topic, partition, batch) for (topic, partition), batch in batches.items())
                for topic, partition, batch in submitted:
                    delivered = await producer.send_batch(batch, topic, partition=partition)
                    delivered.add_done_callback(self._delivered)
                    self.stats["batches"] += 1
        except Exception:  # e.g. the producer's buffer stayed full for its whole request timeout
            queued = len(self._encoded)
            self._encoded.clear()
            self.stats["delivery_errors"] += 1
            log.exception("the Kafka producer failed: this round's unsent batches and %d queued records "
                          "are dropped", queued)
        finally:
            self._sender = None
            if self._encoded:  # encoded after the loop's last check
                self._sender = asyncio.ensure_future(self._send())

    async def _partition_of(self, producer: Any, topic: str, key: Optional[bytes]) -> int:
        partitions = sorted(await producer.partitions_for(topic))
        partition = self._partitioner(key, partitions, partitions)
        if key is not None:  # a record without a key goes to a random partition every time
            self._partitions[(topic, key)] = partition
        return partition

    def _delivered(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.stats["delivery_errors"] += 1
            log.error("a batch of records was not delivered to Kafka: %s", future.exception())

    async def flush(self) -> None:
        """Hand everything queued so far to the producer (the worker calls this before it stops)."""
        if self._pending:
            self._encode_pending()
        while self._sender is not None:
            await asyncio.shield(self._sender)
