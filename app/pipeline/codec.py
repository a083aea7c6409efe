"""Avro values in the Confluent wire format, through the schema registry (docs/architecture.md#d4-avro-and-schemas).

Wire format: one magic byte 0, the schema id as a 4-byte big-endian integer, then
the Avro binary encoding. The writer schema is registered once under the subject
``<topic>-value`` and its id cached; the reader side fetches a writer schema by id
once and caches it. There is no registry round trip per message.

The same code talks to the embedded registry and to the Confluent Schema Registry.
"""
from __future__ import annotations

import io
import json
import struct
import threading
from typing import Any, Callable, Dict, Optional

import fastavro
from faust.serializers.codecs import Codec
from schema_registry.client import SchemaRegistryClient

from app.pipeline.avro_writer import Unsupported, compile_writer

MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """Bytes that are not a Confluent-framed Avro message."""


class RegistryClient(SchemaRegistryClient):
    """python-schema-registry-client's client, taking ``verify`` (an ``ssl.SSLContext``) for an
    https registry: the library reads its own ``ca_location`` only together with a client
    certificate, so a CA file alone would be ignored and the system's CAs used."""

    def __init__(self, url: str, *, verify: Any = None, **kwargs: Any) -> None:
        self._verify = verify
        super().__init__(url=url, **kwargs)

    def _get_client_kwargs(self) -> Dict:
        kwargs = super()._get_client_kwargs()
        if self._verify is not None:
            kwargs["verify"] = self._verify
        return kwargs


_clients: Dict[str, SchemaRegistryClient] = {}
_clients_lock = threading.Lock()


def registry_client(url: str) -> SchemaRegistryClient:
    """One registry client per URL for the whole process (it keeps its own caches), with the
    process's basic auth and CA file (app/security.py ``registry_client_kwargs``)."""
    from app.security import registry_client_kwargs

    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = RegistryClient(url, **registry_client_kwargs())
        return client


class AvroCodec(Codec):
    """A Faust codec writing ``schema`` under ``subject`` and reading any registered writer schema."""

    def __init__(self, subject: str, schema: Any, registry_url: Optional[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.schema = schema
        self.parsed = fastavro.parse_schema(schema)
        try:
            self._write: Optional[Callable[[Any], bytes]] = compile_writer(schema)
        except Unsupported:
            self._write = None  # fastavro writes every value
        self._header: Optional[bytes] = None
        self.registry_url = registry_url
        self._schema_id: Optional[int] = None
        self._writers: Dict[int, Any] = {}

    def _client(self) -> SchemaRegistryClient:
        if not self.registry_url:
            raise RuntimeError(
                "no schema registry URL: set CRYPTICS_SCHEMA_REGISTRY_URL or run through `cryptics up`"
            )
        return registry_client(self.registry_url)

    def schema_id(self) -> int:
        """Register (or look up) our schema under the subject, once."""
        if self._schema_id is None:
            self._schema_id = self._client().register(self.subject, json.dumps(self.schema))
            self._writers[self._schema_id] = self.parsed
        return self._schema_id

    def _writer_schema(self, schema_id: int) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            found = self._client().get_by_id(schema_id)
            if found is None:
                raise WireFormatError(f"schema id {schema_id} is unknown to the registry")
            writer = fastavro.parse_schema(found.raw_schema)
            if writer == self.parsed:  # our own schema, registered by whichever process wrote first
                writer = self.parsed
            self._writers[schema_id] = writer
        return writer

    def _dumps(self, obj: Any) -> bytes:
        if self._header is None:
            self._header = _HEADER.pack(MAGIC, self.schema_id())
        if self._write is not None:
            try:
                return self._header + self._write(obj)
            except Unsupported:
                pass  # a value the compiled writer leaves to fastavro (app/pipeline/avro_writer.py)
        out = io.BytesIO()
        out.write(self._header)
        fastavro.schemaless_writer(out, self.parsed, obj)
        return out.getvalue()

    def _loads(self, data: bytes) -> Any:
        if len(data) < _HEADER.size:
            raise WireFormatError(f"{len(data)} bytes is too short for the Confluent wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireFormatError(f"magic byte is {magic}, expected {MAGIC}")
        payload = io.BytesIO(data)
        payload.seek(_HEADER.size)
        writer = self._writer_schema(schema_id)
        # Bytes written with our own schema need no resolution: say so with no reader schema.
        # Given two equal schemas that are distinct objects, fastavro compares them on every
        # message, and a ticker took 23.6 µs to decode instead of 11.4.
        reader = None if writer is self.parsed else self.parsed
        try:
            value = fastavro.schemaless_reader(payload, writer, reader)
        except (EOFError, IndexError, ValueError, TypeError, OverflowError,
                fastavro.read.SchemaResolutionError) as exc:
            raise WireFormatError(
                f"{self.subject}: bytes with schema id {schema_id} do not decode: {type(exc).__name__}: {exc}"
            ) from None
        if payload.tell() != len(data):
            raise WireFormatError(
                f"{self.subject}: {len(data) - payload.tell()} bytes left over after a record with schema id {schema_id}"
            )
        return value
