"""The records of our orders, read back: the `orders` table once the persistence has caught up.

The order gateway asks, each time a venue session opens, which orders the records say are
still open (app/gateway/leftovers.py; docs/architecture.md#d17-orders-that-end-with-a-session).
The answer must be complete: an order whose insert is still on Kafka, not yet in the table,
would be missed, and its update arriving later would open it again after its ending was
written. So ``PersistedOrders.open_orders``
1. flushes this worker's own producer (what the session before a reconnect reported is on
   Kafka, not in a buffer);
2. takes the end offsets of the ``ack`` and ``fill`` topics, and waits until the persistence
   consumer group (agents/persistence.py) has committed that far: its commits follow the
   rows (docs/architecture.md#d8-persistence-semantics), so every ack and fill published
   before is then in the tables. A worker killed with -9 publishes nothing more, so this is
   all it ever published;
3. reads the open orders with the gateway's label from `orders`, each with the trade ids of its
   recorded `fills`.
``recorded_fills``, asked next, reads the newest fills' trade ids, as complete then: the
gateway records any trade of its label the venue made that is in none of them.
It waits for as long as the persistence needs (a rebalance after a worker died, PostgreSQL
down), logging while it does; the gateway runs it in a task of its own, off the hot path.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Optional, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.gateway.leftovers import RecordedOrder
from app.pipeline.tansu_compat import corrected_end_offsets
from app.pipeline.topics import bootstrap_servers
from app.security import kafka_client_kwargs

log = logging.getLogger(__name__)

#: How often the persistence group's offsets are read while waiting (seconds).
POLL_INTERVAL = 0.5
#: How often a wait that goes on is logged (seconds).
LOG_INTERVAL = 30.0

#: The open orders with a label, and the trade ids of the fills recorded for each. The fills
#: are looked up by instrument and time (the index fills_instrument_time_idx), from a little
#: before the order was created: a fill's time is the venue's, or the local arrival time when
#: the venue gave none, and the two clocks may differ.
OPEN_ORDERS_SQL = """
SELECT o.order_id, o.instrument_name, o.direction, o.order_type, o.time_in_force, o.price, o.amount,
       o.filled_amount, o.insert_reason, o.persistent, extract(epoch FROM o.create_time)::float8 AS create_time,
       o.label, o.client_order_id,
       ARRAY(SELECT f.trade_id FROM fills f
             WHERE f.instrument_name = o.instrument_name AND f.order_id = o.order_id
               AND f.time >= o.create_time - interval '1 hour') AS trade_ids
FROM orders o
WHERE NOT o.is_final AND o.label = $1 AND o.instrument_name IS NOT NULL
ORDER BY o.create_time
"""


#: The newest recorded fill's time, and the trade ids of the fills from $1 seconds before it on.
RECORDED_FILLS_SQL = """
WITH newest AS (SELECT max(time) AS at FROM fills)
SELECT extract(epoch FROM newest.at)::float8 AS newest,
       ARRAY(SELECT f.trade_id FROM fills f WHERE f.time >= newest.at - make_interval(secs => $1)) AS trade_ids
FROM newest
"""


def persistence_group(app_id: str) -> str:
    """The consumer group of the persistence consumer (agents/persistence.py)."""
    return f"{app_id}-persistence"


async def end_offsets(broker_url: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offset of each partition now (Tansu's under-reporting corrected,
    docs/architecture.md#d6-embedded-broker-tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker_url), group_id=None,
                                enable_auto_commit=False, client_id="cryptics-order-records", **kafka_client_kwargs())
    await consumer.start()
    try:
        reported = await consumer.end_offsets(list(partitions))
    finally:
        await consumer.stop()
    if broker_url.startswith("tansu://"):
        return await corrected_end_offsets(bootstrap_servers(broker_url), reported)
    return dict(reported)


async def wait_persisted(broker_url: str, group_id: str, topics: Sequence[str],
                         poll_interval: float = POLL_INTERVAL) -> None:
    """Wait until ``group_id`` has committed every record the ``topics`` hold now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url), client_id="cryptics-order-records",
                                **kafka_client_kwargs())
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        ends = {tp: end for tp, end in (await end_offsets(broker_url, partitions)).items() if end > 0}
        started = logged = time.monotonic()
        while ends:
            # Asked per partition: Tansu does not answer a fetch of all the group's offsets.
            committed = await admin.list_consumer_group_offsets(group_id, partitions=list(ends))
            ends = {tp: end for tp, end in ends.items() if tp not in committed or committed[tp].offset < end}
            if not ends:
                return
            if time.monotonic() - logged >= LOG_INTERVAL:
                logged = time.monotonic()
                behind = sum(end - max(committed[tp].offset, 0) if tp in committed else end for tp, end in ends.items())
                log.warning("waiting %.0f s so far for the persistence (group %s) to write %d more records of %s",
                            logged - started, group_id, behind, ", ".join(sorted({tp.topic for tp in ends})))
            await asyncio.sleep(poll_interval)
    finally:
        await admin.close()


async def recorded_open_orders(database_url: str, label: str) -> list[RecordedOrder]:
    """The orders with ``label`` that the `orders` table says are open, oldest first."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(OPEN_ORDERS_SQL, label)
    finally:
        await conn.close()
    return [RecordedOrder(order_id=r["order_id"], instrument_name=r["instrument_name"], direction=r["direction"],
                          order_type=r["order_type"], time_in_force=r["time_in_force"], price=r["price"],
                          amount=r["amount"], filled_amount=r["filled_amount"], insert_reason=r["insert_reason"],
                          persistent=r["persistent"], create_time=r["create_time"], label=r["label"],
                          client_order_id=r["client_order_id"], recorded_trade_ids=frozenset(r["trade_ids"]))
            for r in rows]


async def recorded_fills(database_url: str, lookback: float) -> tuple[Optional[float], frozenset[str]]:
    """The newest fill's time in `fills` (None if there is none) and the trade ids from ``lookback`` seconds before it."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        row = await conn.fetchrow(RECORDED_FILLS_SQL, float(lookback))
    finally:
        await conn.close()
    return row["newest"], frozenset(row["trade_ids"])


class PersistedOrders:
    """The gateway's OrderRecords (app/gateway/leftovers.py) over the `orders` table and Kafka."""

    def __init__(self, database_url: str, broker_url: str, group_id: str, topics: Sequence[str],
                 flush: Optional[Callable[[], Awaitable[None]]] = None) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.group_id = group_id
        #: The topics whose records must be in the tables first: the acks and the fills.
        self.topics = tuple(topics)
        #: Hands what this worker has queued to Kafka and waits until the broker has it.
        self.flush = flush

    async def open_orders(self, label: str) -> list[RecordedOrder]:
        if self.flush is not None:
            await self.flush()
        await wait_persisted(self.broker_url, self.group_id, self.topics)
        return await recorded_open_orders(self.database_url, label)

    async def recorded_fills(self, lookback: float) -> tuple[Optional[float], frozenset[str]]:
        return await recorded_fills(self.database_url, lookback)
