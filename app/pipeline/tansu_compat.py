"""Compatibility layer for the embedded Tansu broker (docs/architecture.md#d6-embedded-broker-tansu).

The defect: Tansu 0.6.0 answers ListOffsets(LATEST) with the base offset of the
last record batch plus one, not the real end offset, whenever that batch holds
more than one record. Fetch responses carry the right high watermark.

Why it matters: Faust recovers a table by reading its changelog up to the end
offsets it gets from ListOffsets. Against Tansu a restarted worker stopped short
and came back with missing table entries (tests/integration/test_table_recovery.py shows it).

The fix: a Faust transport whose consumer corrects those end offsets with one
fetch per partition, starting one record before the reported end and taking the
high watermark the fetch response carries. It is used only for ``tansu://``
broker URLs, which only the embedded stack hands out; an external Kafka gets
Faust's aiokafka transport (both with the complete flush of app/pipeline/complete_flush.py,
which registers them). It subclasses Faust internals, which is why
faust-streaming and aiokafka are pinned exactly in setup.cfg.
"""
from __future__ import annotations

import asyncio
import logging
from typing import List, Mapping, Sequence, Union

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.security import kafka_client_kwargs

log = logging.getLogger(__name__)

#: How long one correction may take before we give up and keep the reported value.
CORRECTION_TIMEOUT = 10.0


async def corrected_end_offsets(
    bootstrap_servers: Union[str, Sequence[str]], reported: Mapping[TopicPartition, int], timeout: float = CORRECTION_TIMEOUT
) -> dict[TopicPartition, int]:
    """End offsets with Tansu's under-reporting corrected from fetch high watermarks.

    ``reported`` is what ListOffsets(LATEST) said. A partition reported empty (0)
    is empty: Tansu reports at least base offset + 1 as soon as one batch exists.
    """
    result = {tp: offset for tp, offset in reported.items()}
    to_probe = [tp for tp, offset in reported.items() if offset and offset > 0]
    if not to_probe:
        return result
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        client_id="cryptics-tansu-end-offsets",
        fetch_max_bytes=1 << 20,
        max_partition_fetch_bytes=1 << 16,
        **kafka_client_kwargs(),
    )
    await probe.start()
    try:
        probe.assign(to_probe)
        for tp in to_probe:
            probe.seek(tp, reported[tp] - 1)
        pending = set(to_probe)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            await probe.getmany(*pending, timeout_ms=200, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    result[tp] = max(reported[tp], highwater)
                    pending.discard(tp)
                    probe.pause(tp)
        if pending:
            log.warning("could not correct end offsets of %s within %.0f s; using reported values",
                        sorted(pending), timeout)
    finally:
        await probe.stop()
    changed = {tp: (reported[tp], result[tp]) for tp in result if result[tp] != reported[tp]}
    if changed:
        log.info("tansu end offsets corrected (reported -> real): %s", changed)
    return result


class TansuConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with end offsets corrected for Tansu."""

    async def _highwaters(self, partitions: List[TopicPartition]) -> Mapping[TopicPartition, int]:
        reported = await super()._highwaters(partitions)
        transport = self.transport
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        return await corrected_end_offsets(servers, reported)


class TansuConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TansuConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the Tansu consumer; ``tansu://`` URLs get it, with the
    complete flush, through app/pipeline/complete_flush.py."""

    Consumer = TansuConsumer
