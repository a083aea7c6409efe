"""Dead letters: pipeline records the persistence agents could not write (design D8).

Mirrors ``schemas/dead_letter/v1.avsc``. Produced by the sink (app/sink/), listed and
replayed onto their source topic by ``cryptics deadletter`` (app/deadletter.py).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .base import AvroRecord


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


#: A realistic dead letter (the conventions of models/examples.py): a ticker whose mark
#: price broke the tickers table's positive_float8 domain.
EXAMPLE: dict[str, Any] = {
    "source_topic": "cryptics.thalex.ticker.avro",
    "source_partition": 2,
    "source_offset": 1577,
    "key": b"BTC-PERPETUAL",
    # Confluent framing (magic 0, schema id 1) and the first bytes of the Avro body.
    "value": b"\x00\x00\x00\x00\x01\x1aBTC-PERPETUAL\x00\x00\x00\x00\x00\x00\xf0\xbf",
    "stage": "database",
    "error": 'CheckViolationError: value for domain positive_float8 violates check constraint "positive_float8_check"',
    "target_table": "tickers",
    "failed_at": datetime(2025, 5, 18, 14, 34, 15, 228000, tzinfo=timezone.utc),
}


# models/examples.py keeps one example per record for the schema and codec tests; it does
# not list this one yet (it belongs to another change), so the example registers itself
# there. When examples.py lists dead_letter, delete these two lines.
from . import examples as _examples  # noqa: E402

_examples._EXAMPLES.setdefault("dead_letter", EXAMPLE)
