"""AvroCodec (app/pipeline/codec.py) against a real embedded schema registry process.

Each test gets ``registry_url`` (tests/integration/conftest.py): a ``cryptics registry`` process
on a fresh database, spoken to by python-schema-registry-client exactly as in
production. Nothing is mocked; registry traffic is counted by wrapping the client's
``request`` method, which every registry call goes through.

Covered: every record round-trips through the codec and Faust's serializer
registry (subject ``<topic>-value``); a v2 reader decodes v1 bytes by fetching the
writer schema by id, once; the registry refuses an incompatible v3 with HTTP 409;
malformed bytes raise WireFormatError; the schema id is registered once per
subject and cached, so steady-state encoding and decoding make no registry calls.
"""
from __future__ import annotations

import struct
from typing import Any, Iterator

import pytest
from schema_registry.client import SchemaRegistryClient
from schema_registry.client.errors import ClientError

import app.pipeline.codec
from app import faust_app
from app.pipeline.codec import AvroCodec, WireFormatError
from models import examples, schemas
from models.registry import RECORDS, record

HEADER = struct.Struct(">bI")


class RegistryCalls:
    """Counts the HTTP requests one registry client makes (it still makes them)."""

    def __init__(self, client: SchemaRegistryClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        original = client.request

        def counting(url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, url))
            return original(url, method, *args, **kwargs)

        monkeypatch.setattr(client, "request", counting)

    def __len__(self) -> int:
        return len(self.calls)


@pytest.fixture
def registry(registry_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The registry URL, with the app's settings pointing at it and no clients cached from other tests."""
    monkeypatch.setattr(app.pipeline.codec, "_clients", {})
    monkeypatch.setattr(faust_app, "settings", faust_app.settings.with_services(schema_registry_url=registry_url))
    yield registry_url


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget every cached registry client, as a freshly started consumer would have none."""
    monkeypatch.setattr(app.pipeline.codec, "_clients", {})


def schema_id_of(data: bytes) -> int:
    magic, schema_id = HEADER.unpack_from(data)
    assert magic == 0
    return schema_id


def test_every_record_round_trips_through_the_registry(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    serializers = faust_app.app.serializers
    encoded: dict[str, bytes] = {}
    for rt in RECORDS.values():
        codec = faust_app.avro_value_codec(rt.topic, rt.schema)
        assert codec.subject == f"{rt.topic}-value" == rt.subject
        model = rt.model.from_data(examples.example(rt.name))
        # Faust's own path: Record.dumps → codec.dumps(to_representation()), loads → from_data.
        data = serializers.dumps_value(rt.model, model, serializer=codec)
        assert serializers.loads_value(rt.model, data, serializer=codec) == model
        # And plain dictionaries, as fastavro reads them.
        assert codec.loads(codec.dumps(examples.example(rt.name))) == examples.example(rt.name)
        encoded[rt.name] = data

    # The registry holds one version per subject, under <topic>-value, with the id in the header.
    check = SchemaRegistryClient(registry)
    assert set(check.get_subjects()) == {rt.subject for rt in RECORDS.values()}
    for rt in RECORDS.values():
        registered = check.get_schema(rt.subject)
        assert registered.version == 1
        assert schema_id_of(encoded[rt.name]) == registered.schema_id
        assert registered.schema.raw_schema == rt.schema

    # A consumer in another process (no cached client or schema) decodes them all. The writer
    # schema it fetches is its own: it reads without schema resolution (no reader schema).
    new_process(monkeypatch)
    for rt in RECORDS.values():
        reader = faust_app.avro_value_codec(rt.topic, rt.schema)
        assert serializers.loads_value(rt.model, encoded[rt.name], serializer=reader) == \
            rt.model.from_data(examples.example(rt.name))
        assert reader._writers[schema_id_of(encoded[rt.name])] is reader.parsed


@pytest.mark.parametrize("name", ["ticker", "book", "ack", "latency"])
def test_v2_reader_decodes_v1_bytes(registry: str, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    rt = record(name)
    v1, v2 = schemas.load(name, 1), schemas.load(name, 2)
    old_producer = AvroCodec(rt.subject, v1, registry)
    written = examples.example(name, 1)
    data = old_producer.dumps(written)

    new_process(monkeypatch)
    reader = AvroCodec(rt.subject, v2, registry)
    calls = RegistryCalls(app.pipeline.codec.registry_client(registry), monkeypatch)
    decoded = reader.loads(data)
    added = [f["name"] for f in v2["fields"][len(v1["fields"]):]]
    assert added and all(decoded[field] is None for field in added)
    assert decoded == {**written, **dict.fromkeys(added)}
    assert reader._writers[schema_id_of(data)] is not reader.parsed  # v1 bytes: resolved against v2
    assert rt.model.from_data(decoded) == rt.model.from_data(written)
    # The writer schema was fetched by id, once: later messages decode from the cache.
    assert [method for method, _ in calls.calls] == ["GET"]
    assert calls.calls[0][1].endswith(f"/schemas/ids/{schema_id_of(data)}")
    for _ in range(3):
        reader.loads(data)
    assert len(calls) == 1

    # Decoding registered nothing; the v2 producer then adds version 2 with a new id.
    client = SchemaRegistryClient(registry)
    assert client.get_versions(rt.subject) == [1]
    v2_bytes = reader.dumps(examples.example(name, 2))
    assert client.get_versions(rt.subject) == [1, 2]
    assert schema_id_of(v2_bytes) != schema_id_of(data)
    assert reader.loads(v2_bytes) == examples.example(name, 2)


def test_registry_refuses_an_incompatible_v3(registry: str) -> None:
    rt = record("ticker")
    for version in (1, 2):
        AvroCodec(rt.subject, schemas.load("ticker", version), registry).dumps(examples.example("ticker", version))
    v2 = schemas.load("ticker", 2)
    required_field = {**v2, "fields": v2["fields"] + [{"name": "venue_sequence", "type": "long"}]}
    price_as_string = {**v2, "fields": [{**f, "type": "string"} if f["name"] == "mark_price" else f
                                        for f in v2["fields"]]}
    value = {**examples.example("ticker"), "venue_sequence": 1}
    for v3, datum in ((required_field, value), (price_as_string, {**value, "mark_price": "104904.6"})):
        with pytest.raises(ClientError) as refused:
            AvroCodec(rt.subject, v3, registry).dumps(datum)
        assert refused.value.http_code == 409
    assert SchemaRegistryClient(registry).get_versions(rt.subject) == [1, 2]


def test_malformed_bytes_raise_wire_format_errors(registry: str) -> None:
    rt = record("fill")
    codec = AvroCodec(rt.subject, rt.schema, registry)
    good = codec.dumps(examples.example("fill"))
    payload = good[HEADER.size:]
    cases = {
        b"": "0 bytes is too short",
        good[:4]: "4 bytes is too short",
        HEADER.pack(1, schema_id_of(good)) + payload: "magic byte is 1, expected 0",
        HEADER.pack(0, 987654) + payload: "schema id 987654 is unknown to the registry",
        good[:-3]: "do not decode",  # a truncated body
        good + b"\x00\x01": "2 bytes left over",  # trailing garbage is not silently accepted
    }
    for data, message in cases.items():
        with pytest.raises(WireFormatError, match=message):
            codec.loads(data)


def test_schema_id_is_registered_once_and_cached(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = record("ack")
    calls = RegistryCalls(app.pipeline.codec.registry_client(registry), monkeypatch)
    codec = faust_app.avro_value_codec(rt.topic, rt.schema)
    value = examples.example("ack")

    first = codec.dumps(value)
    registration = len(calls)
    assert 1 <= registration <= 2  # look up (not found), then register
    assert all(method == "POST" for method, _ in calls.calls)

    # Steady state: no registry round trip per message, either way (docs/architecture.md#d4-avro-and-schemas).
    for _ in range(200):
        assert codec.loads(codec.dumps(value)) == value
    assert len(calls) == registration

    # A second codec for the same topic in this process reuses the client's cached id.
    again = faust_app.avro_value_codec(rt.topic, rt.schema)
    assert again.dumps(value) == first
    assert again.loads(first) == value
    assert len(calls) == registration
    assert SchemaRegistryClient(registry).get_versions(rt.subject) == [1]
