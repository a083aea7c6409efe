"""Heartbeat: mirrors schemas/heartbeat/v1.avsc."""
from __future__ import annotations

from datetime import datetime

import faust


class Heartbeat(faust.Record, serializer=None, include_metadata=False):
    source: str
    sequence: int
    #: Local wall clock when produced (Avro timestamp-micros; timezone-aware UTC).
    sent_at: datetime
