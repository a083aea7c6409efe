"""Faust's producer flush made complete, so that offsets are never committed ahead of the
table changelogs (docs/architecture.md#d11-analytics-tables-are-exact-under-at-least-once).

The defect: a table write goes into Faust's ProducerBuffer (``send_soon``), and the consumer
flushes the producer before it commits offsets. But ``ProducerBuffer.flush`` (faust-streaming
0.15.3, faust/transport/producer.py ``flush_atmost``) returns as soon as 0.1 s pass without a
message leaving the buffer, whatever is still in it. On a loaded machine the commit then went
ahead of changelog records still buffered; a worker killed with -9 at that moment came back
(or its partitions went to another worker) with the tables behind the committed offsets, and
the events in between were never applied (tests/integration/test_analytics.py, kill -9: over
a hundred ticks short in one CI run).

The fix: a producer whose ``flush`` goes on until the messages that were in the buffer when
it was called have left it (the buffer is first in, first out; what agents add meanwhile is
for the next commit, so a busy worker still commits), then waits for what aiokafka holds, as
Faust's own does. It is the producer of both transports the app uses:
``kafka://`` (Faust's stock aiokafka transport otherwise) and ``tansu://``
(app/pipeline/tansu_compat.py). It subclasses Faust internals, pinned in setup.cfg.
"""
from __future__ import annotations

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from app.pipeline import tansu_compat


class CompleteFlushProducer(faust_aiokafka.Producer):
    async def flush(self) -> None:
        # Each round sends what it can and returns after 0.1 s without progress: go on until
        # the messages buffered now are out (a broker that is down holds the commit, as it
        # should). The count can fall short (one wake-up for several messages sent), which
        # only waits longer, never less: the loop also ends when the buffer is empty.
        buffer = self.buffer
        due, sent = buffer.size, 0
        while sent < due and buffer.size:
            sent += await buffer.flush_atmost(due - sent)
        await super().flush()


class KafkaTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the complete flush; selected by ``kafka://`` URLs."""

    Producer = CompleteFlushProducer


class TansuTransport(tansu_compat.Transport):
    """The Tansu transport (end offsets corrected) with the complete flush; ``tansu://`` URLs."""

    Producer = CompleteFlushProducer


def register() -> None:
    """Make ``kafka://`` and ``tansu://`` broker URLs resolve to these transports."""
    drivers.TRANSPORTS.aliases["kafka"] = f"{__name__}:KafkaTransport"
    drivers.TRANSPORTS.aliases["tansu"] = f"{__name__}:TansuTransport"
