"""The base class of the Avro-backed records: plain nested dictionaries for the codec.

Faust serialises a record as ``codec.dumps(record.to_representation())``, and
``Record.to_representation()`` is shallow: a nested record (a book level, a quote
level, an order fill) stays a ``Record`` object, which fastavro cannot write (it
wants mappings). Records derive from ``AvroRecord``, whose representation is plain
dictionaries and lists all the way down. Decoding needs nothing special:
``Record.from_data`` builds the nested records from the dictionaries fastavro returns.
"""
from __future__ import annotations

import typing
from typing import Any, Mapping

import faust

# Record class → names of its fields whose type can hold a record, found once per
# class: walking only those keeps to_representation cheap (isinstance against
# Faust's abstract model classes costs about a microsecond per value).
_NESTED: dict[type, tuple[str, ...]] = {}


def _holds_record(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, faust.Record):
        return True
    return any(_holds_record(arg) for arg in typing.get_args(annotation))


def _nested_fields(cls: type) -> tuple[str, ...]:
    names = _NESTED.get(cls)
    if names is None:
        names = _NESTED[cls] = tuple(
            name for name, annotation in cls._options.fields.items() if _holds_record(annotation)
        )
    return names


def plain(value: Any) -> Any:
    """``value`` with every record in it turned into a dictionary (lists walked)."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, faust.Record):
        payload = value.asdict()
        for name in _nested_fields(type(value)):
            payload[name] = plain(payload[name])
        return payload
    return value


class AvroRecord(faust.Record, abstract=True, serializer=None, include_metadata=False):
    """A record mirroring an Avro schema: no Faust metadata in the payload (the schema
    says what it is) and no serializer of its own (the topic's AvroCodec encodes it)."""

    def to_representation(self) -> Mapping[str, Any]:
        return plain(self)
