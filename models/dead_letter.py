"""Dead letters: pipeline records the persistence agents could not write (docs/architecture.md#d8-persistence-semantics).

Mirrors ``schemas/dead_letter/v1.avsc``. Produced by the sink (app/pipeline/sink/), listed and
replayed onto their source topic by ``cryptics deadletter`` (app/pipeline/deadletter.py).
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from models.base import AvroRecord


class DeadLetter(AvroRecord):
    """schemas/dead_letter: a record that failed, its coordinates, its bytes and the error."""

    source_topic: str
    source_partition: int
    source_offset: int
    stage: str  # Avro enum DeadLetterStage: decode | row | database
    error: str
    failed_at: datetime
    key: Optional[bytes] = None
    value: Optional[bytes] = None
    target_table: Optional[str] = None

