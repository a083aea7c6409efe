"""The producer flush that drains Faust's buffer completely (app/pipeline/complete_flush.py):
Faust's own buffer flush returns after 0.1 s without progress, whatever is left in it."""
from __future__ import annotations

import asyncio

from faust.transport.drivers import aiokafka as faust_aiokafka

from app.pipeline.complete_flush import CompleteFlushProducer, KafkaTransport, TansuTransport, register


class SlowBuffer:
    """A buffer that, like Faust's under load, sends one message per call and then gives up
    (0.1 s without progress); ``refill`` messages are added by agents meanwhile, each call."""

    def __init__(self, size: int, refill: int = 0) -> None:
        self.size, self.refill, self.calls = size, refill, 0

    async def flush_atmost(self, n: int) -> int:
        self.calls += 1
        sent = 1 if self.size and n > 0 else 0
        self.size += self.refill - sent
        return sent

    async def flush(self) -> None:  # Faust's own: it gives up at once here
        await self.flush_atmost(1)


def test_flush_returns_only_once_the_buffer_is_empty(monkeypatch):
    producer = CompleteFlushProducer.__new__(CompleteFlushProducer)  # no transport: the loop alone
    producer.buffer = SlowBuffer(5)
    after: list[int] = []

    async def aiokafka_flush(self) -> None:
        after.append(self.buffer.size)

    monkeypatch.setattr(faust_aiokafka.Producer, "flush", aiokafka_flush)
    asyncio.run(producer.flush())
    assert producer.buffer.size == 0 and producer.buffer.calls == 5
    assert after == [0]  # what aiokafka holds is waited for after the buffer is empty


def test_flush_waits_for_what_was_buffered_not_for_what_comes_after(monkeypatch):
    producer = CompleteFlushProducer.__new__(CompleteFlushProducer)
    producer.buffer = SlowBuffer(5, refill=1)  # agents add one message for each one sent
    monkeypatch.setattr(faust_aiokafka.Producer, "flush", lambda self: asyncio.sleep(0))
    asyncio.run(asyncio.wait_for(producer.flush(), 5))
    assert producer.buffer.calls == 5  # the five buffered at the call are out; the busy buffer is not awaited


def test_both_broker_schemes_get_the_complete_flush():
    from faust.transport import drivers

    register()
    assert drivers.by_url("kafka://127.0.0.1:9092") is KafkaTransport
    assert drivers.by_url("tansu://127.0.0.1:9092") is TansuTransport
    assert KafkaTransport.Producer is TansuTransport.Producer is CompleteFlushProducer
