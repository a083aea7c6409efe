"""Avro schema validation and schema resolution, for the registry's compatibility checks.

``can_read(reader, writer)`` answers the question at the heart of every Avro
compatibility level: can data written with ``writer`` be decoded with ``reader``?
It follows the "Schema Resolution" rules of the Avro specification and returns
the reasons it cannot, as sentences (an empty list means it can):

- primitives match themselves, and the writer's type may be promoted:
  int → long, float, double; long → float, double; float → double;
  string ↔ bytes;
- records match fields by name (or by a reader field's aliases); a reader field
  the writer does not have needs a default; writer-only fields are skipped;
- enums: every writer symbol must be a reader symbol, unless the reader has a default;
- arrays and maps: their items / values must resolve;
- fixed: same name and same size;
- unions: every branch of a writer union must be readable; a reader union reads
  a writer type if one of its branches does;
- named types (record, enum, fixed) match when their unqualified names are equal
  or one of the reader's aliases is the writer's full name. This is the rule of
  the Avro specification and of the Java ``SchemaCompatibility`` in the Avro
  releases the Confluent Schema Registry runs today (older ones compared full
  names), and fastavro decodes the same way; so a schema that only moves to
  another namespace is accepted here exactly as it is there.

Named types can refer to themselves (a linked list, a tree). Such a pair of
schemas is checked once: a pair met again while it is still being checked is
assumed readable, which is the right answer for recursive types (a failure
anywhere in the cycle is reported where it happens).

``check(level, new, existing)`` applies a Confluent compatibility level
(BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, NONE) to a new schema and the
versions already registered. ``validate`` rejects what is not a valid Avro
schema, with ``fastavro.parse_schema`` plus the structural rules fastavro leaves
out but the Java parser behind Confluent enforces (a record has a field list
with unique names, a union no duplicate types, names are valid Avro names), so
that what this registry accepts, Confluent accepts too.

Logical types are resolved as their underlying types, as Java's checker does.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import fastavro

NONE = "NONE"
BACKWARD = "BACKWARD"
BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
FORWARD = "FORWARD"
FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
FULL = "FULL"
FULL_TRANSITIVE = "FULL_TRANSITIVE"
LEVELS = (NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE)
DEFAULT_LEVEL = BACKWARD

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

# The writer's primitive type → the reader types that can read it (besides itself).
PROMOTIONS = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

SchemaJson = Union[dict, list, str]


class InvalidSchema(ValueError):
    """The text or value is not a valid Avro schema; the message says why."""


# -- the parsed form -------------------------------------------------------
#
# Schemas are parsed into small node objects so that a named type referred to
# by name is the very same node as its definition: recursion becomes a cycle of
# objects, and pairs of nodes can be remembered by identity (eq=False).


@dataclass(eq=False)
class _Primitive:
    name: str


@dataclass(eq=False)
class _Array:
    items: "_Node"


@dataclass(eq=False)
class _Map:
    values: "_Node"


@dataclass(eq=False)
class _Union:
    branches: list["_Node"]


@dataclass(eq=False)
class _Field:
    name: str
    type: "_Node"
    has_default: bool
    aliases: frozenset[str]


@dataclass(eq=False)
class _Named:
    kind: str  # "record", "enum" or "fixed" ("error" is parsed as a record)
    fullname: str
    aliases: frozenset[str]  # full names

    @property
    def name(self) -> str:
        return self.fullname.rpartition(".")[2]


@dataclass(eq=False)
class _Record(_Named):
    fields: list[_Field] = field(default_factory=list)


@dataclass(eq=False)
class _Enum(_Named):
    symbols: list[str] = field(default_factory=list)
    default: Optional[str] = None


@dataclass(eq=False)
class _Fixed(_Named):
    size: int = 0


_Node = Union[_Primitive, _Array, _Map, _Union, _Record, _Enum, _Fixed]


def _describe(node: _Node) -> str:
    if isinstance(node, _Primitive):
        return f'"{node.name}"'
    if isinstance(node, _Named):
        return f'{node.kind} "{node.fullname}"'
    if isinstance(node, _Array):
        return "array"
    if isinstance(node, _Map):
        return "map"
    return "union [" + ", ".join(_describe(b) for b in node.branches) + "]"


class _Parser:
    """Turns a schema's JSON value into nodes, checking what fastavro does not."""

    def __init__(self) -> None:
        self.names: dict[str, _Named] = {}

    def parse(self, schema: Any, namespace: str) -> _Node:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            return self._union(schema, namespace)
        if not isinstance(schema, dict):
            raise InvalidSchema(
                f"{json.dumps(schema)} is not an Avro schema: expected a type name, an object or a union array"
            )
        kind = schema.get("type")
        if not isinstance(kind, str):
            raise InvalidSchema(f'the "type" of {_short(schema)} must be a string')
        if kind in PRIMITIVES:
            return _Primitive(kind)  # logical types resolve as their underlying type
        if kind in ("record", "error"):
            return self._record(schema, namespace)
        if kind == "enum":
            return self._enum(schema, namespace)
        if kind == "fixed":
            return self._fixed(schema, namespace)
        if kind == "array":
            return _Array(self.parse(_required(schema, "items"), namespace))
        if kind == "map":
            return _Map(self.parse(_required(schema, "values"), namespace))
        return self._reference(kind, namespace)  # {"type": "SomeNamedType"}

    def _reference(self, name: str, namespace: str) -> _Node:
        if name in PRIMITIVES:
            return _Primitive(name)
        # A name without a dot is first looked up in the enclosing namespace,
        # then in the null namespace.
        candidates = [name] if "." in name else [_join(namespace, name), name]
        for candidate in candidates:
            if candidate in self.names:
                return self.names[candidate]
        raise InvalidSchema(f'unknown type "{name}" (named types must be defined before they are used)')

    def _union(self, branches: list, namespace: str) -> _Union:
        parsed: list[_Node] = []
        seen: set[str] = set()
        for branch in branches:
            node = self.parse(branch, namespace)
            if isinstance(node, _Union):
                raise InvalidSchema("a union cannot directly contain another union")
            # A union may hold one schema of each kind, except named types,
            # which are told apart by their full names.
            key = node.fullname if isinstance(node, _Named) else _describe(node)
            if key in seen:
                raise InvalidSchema(f"the union {json.dumps(branches)} contains {key} twice")
            seen.add(key)
            parsed.append(node)
        return _Union(parsed)

    def _named(self, schema: dict, namespace: str) -> tuple[str, str, frozenset[str]]:
        """The full name, the namespace it defines and the full names of its aliases."""
        name = schema.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidSchema(f"{schema.get('type')} {_short(schema)} needs a \"name\"")
        declared = schema.get("namespace")
        if declared is not None and not isinstance(declared, str):
            raise InvalidSchema(f'the "namespace" of "{name}" must be a string')
        if "." in name:
            fullname = name
        else:
            fullname = _join(namespace if declared is None else declared, name)
        _check_fullname(fullname, f'the name of {schema.get("type")} "{fullname}"')
        if fullname.rpartition(".")[2] in PRIMITIVES:
            raise InvalidSchema(f'"{fullname}" cannot be used as a name: it is a primitive type')
        if fullname in self.names:
            raise InvalidSchema(f'the type "{fullname}" is defined twice')
        own_namespace = fullname.rpartition(".")[0]
        aliases = schema.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidSchema(f'the "aliases" of "{fullname}" must be a list of names')
        full_aliases = frozenset(a if "." in a else _join(own_namespace, a) for a in aliases)
        for alias in full_aliases:
            _check_fullname(alias, f'the alias "{alias}" of "{fullname}"')
        return fullname, own_namespace, full_aliases

    def _record(self, schema: dict, namespace: str) -> _Record:
        fullname, own_namespace, aliases = self._named(schema, namespace)
        record = _Record("record", fullname, aliases)
        # Defined before its fields are parsed, so a field can refer to the record itself.
        self.names[fullname] = record
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise InvalidSchema(f'record "{fullname}" needs a "fields" list')
        seen: set[str] = set()
        for entry in fields:
            if not isinstance(entry, dict):
                raise InvalidSchema(f'each field of record "{fullname}" must be an object')
            name = entry.get("name")
            if not isinstance(name, str) or not _NAME.match(name):
                raise InvalidSchema(f'record "{fullname}" has a field with an invalid name: {json.dumps(name)}')
            if name in seen:
                raise InvalidSchema(f'record "{fullname}" has two fields named "{name}"')
            seen.add(name)
            field_aliases = entry.get("aliases", [])
            if not isinstance(field_aliases, list) or not all(isinstance(a, str) for a in field_aliases):
                raise InvalidSchema(f'the "aliases" of field "{name}" in "{fullname}" must be a list of names')
            node = self.parse(_required(entry, "type"), own_namespace)
            record.fields.append(_Field(name, node, "default" in entry, frozenset(field_aliases)))
        return record

    def _enum(self, schema: dict, namespace: str) -> _Enum:
        fullname, _, aliases = self._named(schema, namespace)
        symbols = schema.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) and _NAME.match(s) for s in symbols):
            raise InvalidSchema(f'enum "{fullname}" needs "symbols": a list of valid names')
        if len(set(symbols)) != len(symbols):
            raise InvalidSchema(f'enum "{fullname}" lists a symbol twice')
        default = schema.get("default")
        if default is not None and default not in symbols:
            raise InvalidSchema(f'the default "{default}" of enum "{fullname}" is not one of its symbols')
        node = _Enum("enum", fullname, aliases, symbols=list(symbols), default=default)
        self.names[fullname] = node
        return node

    def _fixed(self, schema: dict, namespace: str) -> _Fixed:
        fullname, _, aliases = self._named(schema, namespace)
        size = schema.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidSchema(f'fixed "{fullname}" needs a "size": a non-negative integer')
        node = _Fixed("fixed", fullname, aliases, size=size)
        self.names[fullname] = node
        return node


def _join(namespace: str, name: str) -> str:
    return f"{namespace}.{name}" if namespace else name


def _check_fullname(fullname: str, what: str) -> None:
    if not all(_NAME.match(part) for part in fullname.split(".")):
        raise InvalidSchema(f"{what} is not a valid Avro name (letters, digits and _, not starting with a digit)")


def _required(schema: dict, key: str) -> Any:
    if key not in schema:
        raise InvalidSchema(f'{_short(schema)} is missing "{key}"')
    return schema[key]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(schema: Any, *, bare_names: bool) -> Any:
    """The JSON value of a schema given as a value or as JSON text; with
    ``bare_names``, a plain type name such as ``int`` (convenient in Python code)
    is taken as that name rather than as JSON (where ``null`` would be None)."""
    if not isinstance(schema, str):
        return schema
    if bare_names and all(_NAME.match(part) for part in schema.split(".")):
        return schema
    try:
        return json.loads(schema)
    except json.JSONDecodeError as exc:
        raise InvalidSchema(f"the schema is not valid JSON: {exc}") from None


def validate(schema: Any) -> Any:
    """The JSON value of ``schema`` (JSON text or an already-decoded value) if it
    is a valid Avro schema; raises ``InvalidSchema`` saying why not."""
    value = _load(schema, bare_names=False)
    _parse_value(value)
    return value


def _parse_value(value: Any) -> _Node:
    try:
        fastavro.parse_schema(value)
    except Exception as exc:  # fastavro raises a mix of its own errors, KeyError and TypeError
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, TypeError)) else str(exc)
        raise InvalidSchema(f"invalid Avro schema: {detail}") from None
    try:
        return _Parser().parse(value, "")
    except InvalidSchema as exc:
        raise InvalidSchema(f"invalid Avro schema: {exc}") from None


def _parse(schema: Any) -> _Node:
    return _parse_value(_load(schema, bare_names=True))


# -- resolution --------------------------------------------------------------

# A reason is (location in the reader schema, message).
_Reason = tuple[str, str]
_Pair = tuple[_Node, _Node]


class _Resolver:
    """Checks (reader, writer) pairs of nodes, remembering what it has proven.

    ``resolve`` returns the reasons a pair does not resolve, and the pairs still
    being checked further up that the answer relied on ("assumed readable").
    A failure is final whatever was assumed, so it is always remembered; a
    success is remembered only when it relied on no assumption, since an
    assumption may still turn out false. Remembering keeps the work linear even
    for schemas that reuse a named type in many places.
    """

    def __init__(self) -> None:
        self.in_progress: set[_Pair] = set()
        self.failed: dict[_Pair, list[_Reason]] = {}
        self.proven: set[_Pair] = set()

    def resolve(self, reader: _Node, writer: _Node) -> tuple[list[_Reason], frozenset[_Pair]]:
        pair = (reader, writer)
        if pair in self.failed:
            return self.failed[pair], frozenset()
        if pair in self.proven:
            return [], frozenset()
        if pair in self.in_progress:
            return [], frozenset({pair})
        self.in_progress.add(pair)
        try:
            reasons, assumed = self._resolve(reader, writer)
        finally:
            self.in_progress.discard(pair)
        assumed = assumed - {pair}
        if reasons:
            self.failed[pair] = reasons
        elif not assumed:
            self.proven.add(pair)
        return reasons, assumed

    def _resolve(self, reader: _Node, writer: _Node) -> tuple[list[_Reason], frozenset[_Pair]]:
        if isinstance(writer, _Union):
            # The writer may have written any of its branches: each must be readable.
            reasons: list[_Reason] = []
            assumed: frozenset[_Pair] = frozenset()
            for branch in writer.branches:
                branch_reasons, branch_assumed = self.resolve(reader, branch)
                reasons += branch_reasons
                assumed |= branch_assumed
            return reasons, assumed
        if isinstance(reader, _Union):
            return self._reader_union(reader, writer)
        if not _matches(reader, writer):
            return [("", _mismatch(reader, writer))], frozenset()
        if isinstance(reader, _Primitive):
            return [], frozenset()  # _matches covered names and promotions
        if isinstance(reader, _Array):
            return self._nested(reader.items, writer.items, "/items")  # type: ignore[union-attr]
        if isinstance(reader, _Map):
            return self._nested(reader.values, writer.values, "/values")  # type: ignore[union-attr]
        if isinstance(reader, _Record):
            return self._record(reader, writer)  # type: ignore[arg-type]
        if isinstance(reader, _Enum):
            return self._enum(reader, writer), frozenset()  # type: ignore[arg-type]
        return self._fixed(reader, writer), frozenset()  # type: ignore[arg-type]

    def _nested(self, reader: _Node, writer: _Node, location: str) -> tuple[list[_Reason], frozenset[_Pair]]:
        reasons, assumed = self.resolve(reader, writer)
        return [(location + where, message) for where, message in reasons], assumed

    def _reader_union(self, reader: _Union, writer: _Node) -> tuple[list[_Reason], frozenset[_Pair]]:
        candidates = [branch for branch in reader.branches if _matches(branch, writer)]
        if not candidates:
            return [("", f"writer type {_describe(writer)} cannot be read by any branch of the reader's "
                         f"{_describe(reader)}")], frozenset()
        first_reasons: list[_Reason] = []
        for branch in candidates:
            reasons, assumed = self.resolve(branch, writer)
            if not reasons:
                return [], assumed
            first_reasons = first_reasons or reasons
        # The branch that matches by type or name is the one a decoder picks, so
        # its reasons are the useful ones.
        return first_reasons, frozenset()

    def _record(self, reader: _Record, writer: _Record) -> tuple[list[_Reason], frozenset[_Pair]]:
        by_name = {f.name: f for f in writer.fields}
        reasons: list[_Reason] = []
        assumed: frozenset[_Pair] = frozenset()
        for reader_field in reader.fields:
            written = by_name.get(reader_field.name)
            if written is None:
                written = next((by_name[a] for a in sorted(reader_field.aliases) if a in by_name), None)
            location = f"/fields/{reader_field.name}"
            if written is None:
                if not reader_field.has_default:
                    reasons.append((location, f'reader field "{reader_field.name}" of {_describe(reader)} '
                                              "is missing from the writer and has no default"))
                continue
            field_reasons, field_assumed = self._nested(reader_field.type, written.type, location)
            reasons += field_reasons
            assumed |= field_assumed
        return reasons, assumed

    @staticmethod
    def _enum(reader: _Enum, writer: _Enum) -> list[_Reason]:
        missing = [s for s in writer.symbols if s not in reader.symbols]
        if missing and reader.default is None:
            return [("/symbols", f"writer symbols {json.dumps(missing)} are missing from reader "
                                 f"{_describe(reader)}, which has no default")]
        return []

    @staticmethod
    def _fixed(reader: _Fixed, writer: _Fixed) -> list[_Reason]:
        if reader.size != writer.size:
            return [("/size", f"writer {_describe(writer)} has size {writer.size}, "
                              f"reader {_describe(reader)} has size {reader.size}")]
        return []


def _matches(reader: _Node, writer: _Node) -> bool:
    """Whether two non-union schemas are of kinds that can resolve at all (the
    specification's "match"): the deeper checks come after."""
    if isinstance(reader, _Primitive) and isinstance(writer, _Primitive):
        return reader.name == writer.name or reader.name in PROMOTIONS.get(writer.name, ())
    if isinstance(reader, _Named) and isinstance(writer, _Named):
        return reader.kind == writer.kind and (reader.name == writer.name or writer.fullname in reader.aliases)
    return (isinstance(reader, _Array) and isinstance(writer, _Array)) or (
        isinstance(reader, _Map) and isinstance(writer, _Map)
    )


def _mismatch(reader: _Node, writer: _Node) -> str:
    if isinstance(reader, _Named) and isinstance(writer, _Named) and reader.kind == writer.kind:
        return (f"writer {_describe(writer)} cannot be read as {_describe(reader)}: the names differ "
                f'and no alias of the reader is "{writer.fullname}"')
    return f"writer type {_describe(writer)} cannot be read as {_describe(reader)}"


def _format(reasons: list[_Reason]) -> list[str]:
    return [f"at {where}: {message}" if where else message for where, message in reasons]


def can_read(reader_schema: SchemaJson, writer_schema: SchemaJson) -> list[str]:
    """Why data written with ``writer_schema`` cannot be read with ``reader_schema``;
    an empty list when it can.

    Schemas are JSON values (dict, list, or str for a type name) or JSON text.
    Raises ``InvalidSchema`` when either is not a valid Avro schema.
    """
    return _can_read_parsed(_parse(reader_schema), _parse(writer_schema))


def _can_read_parsed(reader: _Node, writer: _Node) -> list[str]:
    reasons, _ = _Resolver().resolve(reader, writer)
    return _format(reasons)


def check(
    level: str,
    new: SchemaJson,
    existing_versions_oldest_first: Sequence[SchemaJson],
    labels: Optional[Sequence[str]] = None,
) -> list[str]:
    """Why ``new`` breaks compatibility ``level`` with the registered versions;
    an empty list when it does not.

    - BACKWARD: the new schema reads data written with the latest version
      (consumers upgrade first);
    - FORWARD: the latest version reads data written with the new schema
      (producers upgrade first);
    - FULL: both; the _TRANSITIVE forms check every version, not only the latest;
    - NONE: nothing is checked.

    ``labels`` names the versions in the messages (e.g. "version 3"); by default
    they are numbered oldest first.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown compatibility level {level!r}; expected one of {', '.join(LEVELS)}")
    existing = list(existing_versions_oldest_first)
    if level == NONE or not existing:
        return []
    names = list(labels) if labels is not None else [f"existing schema {i + 1} of {len(existing)}"
                                                     for i in range(len(existing))]
    if len(names) != len(existing):
        raise ValueError("labels must name each existing version")
    if not level.endswith("_TRANSITIVE"):
        existing, names = existing[-1:], names[-1:]
        if labels is None:
            names = ["the latest schema"]
    new_node = _parse(new)
    backward = level.startswith((BACKWARD, FULL))
    forward = level.startswith((FORWARD, FULL))
    reasons: list[str] = []
    for old, name in zip(existing, names):
        old_node = _parse(old)
        if backward:
            reasons += [f"the new schema cannot read data written with {name}: {reason}"
                        for reason in _can_read_parsed(new_node, old_node)]
        if forward:
            reasons += [f"{name} cannot read data written with the new schema: {reason}"
                        for reason in _can_read_parsed(old_node, new_node)]
    return reasons
