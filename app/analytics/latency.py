"""Stage latencies from the records on the topics, as the ``stage_latency`` view derives them.

timescale/0004_views.sql computes every D9 stage (docs/architecture.md#d9-latency-stamps)
from the stamps on the rows once they are persisted; the analytics agents compute the same
stages from the Kafka records as they stream past, so the live histograms and the database
agree. Stages ending at ``persisted_at`` exist only in the database and are not here.

A duration is computed as the view's ``stage_us()`` does after the sink stored the row: the
exchange's float seconds become a datetime (microsecond resolution, ``app.clock.utc``, as
the sink converts them), then ``round(seconds * 1e6)`` of the difference (``app.clock.micros``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Optional

from app.clock import micros, utc

#: The pipeline stages of D9 in the order an event passes them (latency samples may carry
#: other stage names too; they are passed through as they are).
STAGES = (
    "exchange_to_received",
    "received_to_quoted",
    "quoted_to_order_sent",
    "order_sent_to_ack_received",
)

#: record name -> (key field, exchange time field) of the records whose exchange_to_received
#: stage the view derives.
_EXCHANGE_TIMES = {
    "ticker": ("instrument_name", "mark_timestamp"),
    "book": ("instrument_name", "time"),
    "index": ("index_name", "timestamp"),
    "trade": ("instrument_name", "timestamp"),
}

#: Every record name stage_samples takes.
RECORDS = (*_EXCHANGE_TIMES, "latency")


def stage_samples(record: str, value: Mapping[str, Any]) -> list[tuple[str, str, float, int]]:
    """(key name, stage, end time as unix seconds, duration µs) of each stage ``value`` gives.

    ``record`` is the schema name (``ticker``, ``book``, ``index``, ``trade``, ``latency``);
    ``value`` the record as fastavro decodes it. A market-data record without
    ``received_at`` (v1, or a trade from a snapshot) gives nothing; a latency sample gives
    its own stage. ValueError for any other record name.
    """
    if record == "latency":
        end_at: datetime = value["end_at"]
        return [(value["instrument_name"], value["stage"], end_at.timestamp(), value["duration_us"])]
    try:
        key_field, time_field = _EXCHANGE_TIMES[record]
    except KeyError:
        raise ValueError(f"no stage latencies for record {record!r} (known: {', '.join(RECORDS)})") from None
    received_at: Optional[datetime] = value["received_at"]
    if received_at is None:
        return []
    duration = micros(utc(value[time_field]), received_at)
    return [(value[key_field], "exchange_to_received", received_at.timestamp(), duration)]
