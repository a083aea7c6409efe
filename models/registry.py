"""Every record that travels on a Kafka topic: its model, its schemas, its topic and key.

    from models.registry import RECORDS
    for record in RECORDS.values():
        record.model, record.schema, record.topic, record.key_field

``RECORDS`` maps the record name (the folder under ``schemas/``) to a
``RecordType``. The schema is always the newest version (what producers write and
``models/`` mirrors); older versions stay readable through ``schema_version``.
``TABLE_STATES`` names the other folders of ``schemas/``: the values of the analytics'
Faust tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Type

import faust

from models import schemas
from models.analytics import Markout, PnlSnapshot, QuoteQuality
from models.dead_letter import DeadLetter
from models.heartbeat import Heartbeat
from models.latency import LatencySample
from models.market import BookUpdate, IndexPrice, PublicTrade, Ticker
from models.orders import Ack, Fill
from models.position import Position
from models.quote import QuoteDecision

NAMESPACE = "cryptics"


def topic_name(venue: str, record: str) -> str:
    """``cryptics.<venue>.<record>.avro``: the topic naming convention (docs/architecture.md#d3-kafka-topics)."""
    return f"{NAMESPACE}.{venue}.{record}.avro"


@dataclass(frozen=True)
class RecordType:
    #: Folder under schemas/ and the ``<record>`` part of the topic name.
    name: str
    #: The faust.Record mirroring the newest schema.
    model: Type[faust.Record]
    #: The ``<venue>`` part of the topic name: thalex, or system for the wiring records.
    venue: str
    #: The value field that is also the Kafka key (docs/architecture.md#d3-kafka-topics: the instrument name).
    key_field: str

    @property
    def versions(self) -> list[int]:
        """Schema versions present, oldest first."""
        return schemas.versions(self.name)

    @property
    def schema(self) -> Any:
        """The newest schema (JSON value; shared, do not mutate)."""
        return schemas.load(self.name)

    def schema_version(self, version: int) -> Any:
        return schemas.load(self.name, version)

    @property
    def topic(self) -> str:
        """``cryptics.<venue>.<record>.avro`` (``topic_name``)."""
        return topic_name(self.venue, self.name)

    @property
    def subject(self) -> str:
        """The schema-registry subject of the topic's values (docs/architecture.md#d4-avro-and-schemas)."""
        return f"{self.topic}-value"


RECORDS: Mapping[str, RecordType] = {
    r.name: r
    for r in (
        RecordType("heartbeat", Heartbeat, "system", "source"),
        RecordType("ticker", Ticker, "thalex", "instrument_name"),
        RecordType("book", BookUpdate, "thalex", "instrument_name"),
        RecordType("index", IndexPrice, "thalex", "index_name"),
        RecordType("trade", PublicTrade, "thalex", "instrument_name"),
        RecordType("quote", QuoteDecision, "thalex", "instrument_name"),
        RecordType("ack", Ack, "thalex", "instrument_name"),
        RecordType("fill", Fill, "thalex", "instrument_name"),
        RecordType("position", Position, "thalex", "instrument_name"),
        RecordType("latency", LatencySample, "thalex", "instrument_name"),
        # What the analytics publish (app/analytics/), persisted by the sink like the venue's records.
        RecordType("markout", Markout, "thalex", "instrument_name"),
        RecordType("pnl_snapshot", PnlSnapshot, "thalex", "instrument_name"),
        RecordType("quote_quality", QuoteQuality, "thalex", "instrument_name"),
        # Records the persistence agents could not write (app/pipeline/sink/); keyed by their source topic.
        RecordType("dead_letter", DeadLetter, "thalex", "source_topic"),
    )
}

#: The Avro schemas of the analytics tables' values (folders under schemas/, namespace
#: cryptics.analytics): not topic records of their own, but a Faust table's changelog is a
#: topic too, and these schemas say what its values hold (app/analytics/ turns each state
#: into and from such a dictionary).
TABLE_STATES: tuple[str, ...] = (
    "position_state", "candle", "latency_histogram", "markout_book", "resting_quotes", "quote_window",
    "analytics_progress",
)


def record(name: str) -> RecordType:
    """The record called ``name``; a KeyError names the known ones."""
    try:
        return RECORDS[name]
    except KeyError:
        raise KeyError(f"unknown record {name!r}; known: {', '.join(RECORDS)}") from None
