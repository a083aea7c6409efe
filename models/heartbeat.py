"""Heartbeat: mirrors schemas/heartbeat/v1.avsc."""
from __future__ import annotations

import faust


class Heartbeat(faust.Record, serializer=None, include_metadata=False):
    source: str
    sequence: int
    #: Microseconds since the epoch (Avro timestamp-micros), local wall clock.
    sent_at: int
