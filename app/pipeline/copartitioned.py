"""Faust tables whose changelog partition is the partition of the events that wrote them.

A table is co-partitioned with its input (docs/architecture.md#d3-kafka-topics): a key
written while handling events of source partition p must go to changelog partition p, so
that the worker Faust assigns source partition p to also recovers (and holds) that key.
Faust picks the changelog partition from the *current event*, which it knows only while a
stream yields one event at a time; once a batch is taken (``stream.take_events``) there is
no current event, and Faust refuses the write ("Cannot modify table key from outside of
stream iteration").

``use_partitioner=True`` would let the producer's partitioner choose instead. For a table
keyed by the instrument, with a raw string key like the topics', the partitioner gives
the key's source partition (tests/integration/test_analytics.py shows it). For a windowed
table it does not: the changelog key is ``(key, window)``, which hashes elsewhere, and
after a rebalance the key's windows would be recovered by a worker that never sees its
events. So the analytics tables say their partition themselves::

    with writing_to(partition):
        table[key] = value

One rule for plain and windowed tables alike, and a write outside ``writing_to`` is an
error instead of a changelog record on a partition nobody expects.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Iterator, Optional

import faust

_partition: ContextVar[Optional[int]] = ContextVar("copartitioned_partition", default=None)


@contextlib.contextmanager
def writing_to(partition: int) -> Iterator[None]:
    """Table writes inside this block go to changelog partition ``partition``."""
    token = _partition.set(partition)
    try:
        yield
    finally:
        _partition.reset(token)


def use_schema_serializers(table: faust.Table) -> None:
    """Make ``table`` write its changelog with its schema's serializers.

    Faust sends changelog records with the table's own ``key_serializer`` and
    ``value_serializer``, taken from ``key_type``/``value_type`` (json unless the type names
    one), and these override the schema's: without this, a table given an Avro codec in its
    schema writes JSON. Call it before the changelog topic is first used."""
    table.key_serializer = table.schema.key_serializer
    table.value_serializer = table.schema.value_serializer


class CoPartitionedTable(faust.Table):
    """A Faust table whose writes go to the partition named by ``writing_to``."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        use_schema_serializers(self)

    def partition_for_key(self, key: Any) -> Optional[int]:
        partition = _partition.get()
        if partition is None:
            raise RuntimeError(f"table {self.name}: write of {key!r} outside writing_to(partition)")
        return partition

    def write(self, key: Any, value: Any, partition: int) -> None:
        """``self[key] = value``, its changelog record to ``partition``."""
        with writing_to(partition):
            self[key] = value
        # The memory store knows the partition of the keys it recovered, not of those written
        # live; told here, it drops this key too when a rebalance moves the partition away
        # (faust/stores/memory.py on_recovery_completed), so a key lives on one worker.
        self.data._key_partition[key] = partition

    def window_key(self, key: str, timestamp: float) -> tuple:
        """The stored key of ``key``'s window holding ``timestamp``: ``(key, (start, end))``,
        exactly as Faust's windowed views (``table[key].current()``) look it up."""
        (window_range,) = self.window.ranges(timestamp)  # tumbling: one window per timestamp
        return key, window_range


def copartitioned_table(app: faust.App, name: str, *, help: str, schema: faust.Schema, partitions: int,
                        window_seconds: Optional[float] = None, expires_seconds: Optional[float] = None) -> CoPartitionedTable:
    """Register a ``CoPartitionedTable`` on ``app``; tumbling windows of ``window_seconds`` if given."""
    table = CoPartitionedTable(app, name=name, help=help, schema=schema, partitions=partitions,
                               beacon=app.tables.beacon)
    app.tables.add(table)
    if window_seconds is not None:
        table.tumbling(window_seconds, expires=expires_seconds)
    return table
