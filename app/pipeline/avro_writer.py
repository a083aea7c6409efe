"""Avro binary encoding, compiled once per schema into plain Python functions.

``compile_writer(schema)`` turns an Avro schema (the JSON of schemas/<record>/vN.avsc) into a
function ``value -> bytes`` that writes exactly what ``fastavro.schemaless_writer`` writes
(tests/property/test_avro_writer.py holds the two equal on random records of every schema in the
project). Why: fastavro resolves every union at run time by validating the value against
each branch, about 1 µs per optional field; a ticker (19 optional doubles) took 15.5 µs
through the codec, the largest single cost of the worker on the whole pipeline from the
venue. Here each field's writer is chosen once, from the schema: 6.6 µs for the same ticker
(benchmarks/bench_codec.py).

Supported: what the project's schemas use (records, enums, arrays, maps, null, boolean, int,
long, double, string, bytes, ``timestamp-micros`` on a long as an aware datetime or an int, named
types referenced by name, unions of null with one other type). ``compile_writer`` raises
``Unsupported`` for anything else (a fixed, a float: fastavro writes those), and a value this
writer cannot represent the way fastavro would (a naive datetime, a value of the wrong
type) raises ``Unsupported`` as it is written: the codec (app/pipeline/codec.py) then falls back to
fastavro, which writes it or raises its own clear error.
"""
from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any, Callable

#: Appends the encoding of a value to a list of byte strings.
Write = Callable[[list, Any], None]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_pack_double = struct.Struct("<d").pack


class Unsupported(ValueError):
    """A schema or a value this writer leaves to fastavro."""


def _long(n: int) -> bytes:
    """Zig-zag varint, as Avro writes int and long."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _write_long(out: list, value: Any) -> None:
    if type(value) is not int or not -(1 << 63) <= value < (1 << 63):  # bool, float, too big: fastavro's verdict
        raise Unsupported(f"not a 64-bit int: {value!r}")
    out.append(_long(value))


def _write_double(out: list, value: Any) -> None:
    if type(value) is not float and type(value) is not int:
        raise Unsupported(f"not a number: {value!r}")
    out.append(_pack_double(value))


def _write_boolean(out: list, value: Any) -> None:
    if type(value) is not bool:
        raise Unsupported(f"not a boolean: {value!r}")
    out.append(b"\x01" if value else b"\x00")


def _write_string(out: list, value: Any) -> None:
    if type(value) is not str:
        raise Unsupported(f"not a string: {value!r}")
    data = value.encode()
    out.append(_long(len(data)))
    out.append(data)


def _write_bytes(out: list, value: Any) -> None:
    if type(value) is not bytes:
        raise Unsupported(f"not bytes: {value!r}")
    out.append(_long(len(value)))
    out.append(value)


def _write_null(out: list, value: Any) -> None:
    if value is not None:
        raise Unsupported(f"not null: {value!r}")


def _write_timestamp_micros(out: list, value: Any) -> None:
    if type(value) is datetime and value.tzinfo is not None:
        delta = value - EPOCH
        out.append(_long((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds))
    else:
        _write_long(out, value)


_PRIMITIVES: dict[str, Write] = {
    "null": _write_null, "boolean": _write_boolean, "int": _write_long, "long": _write_long,
    "double": _write_double, "string": _write_string, "bytes": _write_bytes,
}


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _writer(schema: Any, named: dict[str, Write], namespace: str) -> Write:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = _full_name(schema, namespace)
        if full in named:
            return lambda out, value: named[full](out, value)  # named may still be being compiled
        raise Unsupported(f"unknown type {schema!r}")
    if isinstance(schema, list):
        return _union_writer(schema, named, namespace)
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-micros" and kind == "long":
        return _write_timestamp_micros
    if kind in _PRIMITIVES:
        if "logicalType" in schema:
            raise Unsupported(f"logical type {schema['logicalType']!r}")
        return _PRIMITIVES[kind]
    if kind == "record":
        return _record_writer(schema, named, namespace)
    if kind == "enum":
        index = {symbol: _long(i) for i, symbol in enumerate(schema["symbols"])}

        def write_enum(out: list, value: Any) -> None:
            tag = index.get(value) if type(value) is str else None
            if tag is None:
                raise Unsupported(f"not a symbol of the enum: {value!r}")
            out.append(tag)
        named[_full_name(schema["name"], schema.get("namespace", namespace))] = write_enum
        return write_enum
    if kind == "array":
        item = _writer(schema["items"], named, namespace)

        def write_array(out: list, value: Any) -> None:
            if type(value) is not list:
                raise Unsupported(f"not a list: {type(value).__name__}")
            if value:
                out.append(_long(len(value)))
                for element in value:
                    item(out, element)
            out.append(b"\x00")
        return write_array
    if kind == "map":
        key, item = _PRIMITIVES["string"], _writer(schema["values"], named, namespace)

        def write_map(out: list, value: Any) -> None:
            if type(value) is not dict:
                raise Unsupported(f"not a dict: {type(value).__name__}")
            if value:
                out.append(_long(len(value)))
                for name, element in value.items():
                    key(out, name)
                    item(out, element)
            out.append(b"\x00")
        return write_map
    raise Unsupported(f"type {kind!r}")


def _union_writer(branches: list, named: dict[str, Write], namespace: str) -> Write:
    if len(branches) != 2 or "null" not in branches:
        raise Unsupported(f"union {branches!r}")
    null_index = branches.index("null")
    other = _writer(branches[1 - null_index], named, namespace)
    null_tag, other_tag = _long(null_index), _long(1 - null_index)

    def write_optional(out: list, value: Any) -> None:
        if value is None:
            out.append(null_tag)
        else:
            out.append(other_tag)
            other(out, value)
    return write_optional


def _record_writer(schema: dict, named: dict[str, Write], namespace: str) -> Write:
    namespace = schema.get("namespace", namespace)
    fields: list[tuple[str, Any, Write]] = []

    def write_record(out: list, value: Any) -> None:
        if type(value) is not dict:
            raise Unsupported(f"not a dict: {type(value).__name__}")
        get = value.get
        for name, default, write in fields:
            write(out, get(name, default))
    named[_full_name(schema["name"], namespace)] = write_record  # before the fields: a record may refer to itself
    for field in schema["fields"]:
        fields.append((field["name"], field.get("default"), _writer(field["type"], named, namespace)))
    return write_record


def compile_writer(schema: Any) -> Callable[[Any], bytes]:
    """``value -> bytes``, the Avro binary encoding of ``value`` under ``schema`` (raises Unsupported)."""
    write = _writer(schema, {}, "")

    def encode(value: Any) -> bytes:
        out: list = []
        write(out, value)
        return b"".join(out)
    return encode
