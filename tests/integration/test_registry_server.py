"""The embedded schema registry against a real PostgreSQL, driven by the real
python-schema-registry-client (the one the application uses for Confluent too).

The session's embedded PostgreSQL (conftest) serves; each test gets a fresh database and a
registry on a free loopback port, run in a thread with its own event loop so that
both the blocking ``SchemaRegistryClient`` and ``AsyncSchemaRegistryClient`` can
talk to it. ``test_serve_runs_until_sigterm`` runs ``serve()`` as a real process.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import asyncpg
import httpx
import pytest
from aiohttp import web
from schema_registry.client import AsyncSchemaRegistryClient, SchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema, SubjectVersion

from app.stack.postgres import EmbeddedPostgres
from app.stack.process import free_port, spawn
from app.stack.registry.server import CONTENT_TYPE, start_server
from app.stack.registry.store import RegistryStore

ROOT = Path(__file__).resolve().parents[2]

TICK_V1 = {
    "type": "record", "name": "Tick", "namespace": "cryptics",
    "fields": [{"name": "instrument", "type": "string"}, {"name": "price", "type": "double"}],
}
# v2 adds an optional field with a default: BACKWARD compatible.
TICK_V2 = {**TICK_V1, "fields": TICK_V1["fields"] + [{"name": "venue", "type": ["null", "string"], "default": None}]}
# A new required field: the new schema cannot read v2 data (no default).
TICK_REQUIRED_FIELD = {**TICK_V2, "fields": TICK_V2["fields"] + [{"name": "size", "type": "double"}]}
# price changes type double → string.
TICK_PRICE_AS_STRING = {**TICK_V2, "fields": [TICK_V2["fields"][0], {"name": "price", "type": "string"},
                                              TICK_V2["fields"][2]]}


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def pg(postgres: EmbeddedPostgres) -> EmbeddedPostgres:
    """The session's embedded PostgreSQL (tests/integration/conftest.py)."""
    return postgres


@pytest.fixture
def dsn(database: str) -> str:
    """A fresh database for one test (tests/integration/conftest.py)."""
    return database


class RegistryThread:
    """The registry served from a background thread with its own event loop."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="registry", daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> "RegistryThread":
        self.thread.start()
        self.runner, self.url = self._run(start_server(self.dsn))
        return self

    def stop(self) -> None:
        if self.runner is not None:
            self._run(self.runner.cleanup())
            self.runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@pytest.fixture
def registry(dsn: str) -> Iterator[RegistryThread]:
    server = RegistryThread(dsn).start()
    try:
        yield server
    finally:
        server.stop()


def raw(registry: RegistryThread, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request as the Confluent clients send it."""
    headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
    return httpx.request(method, registry.url + path, headers=headers,
                         content=None if body is None else json.dumps(body), timeout=10)


# -- the synchronous client ----------------------------------------------------------


def test_register_lookup_and_list(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    schema_id = client.register("ticks-value", AvroSchema(TICK_V1))
    assert isinstance(schema_id, int)

    # A fresh client (no cache) registering the same schema gets the same id and no new version.
    again = SchemaRegistryClient(registry.url)
    assert again.register("ticks-value", AvroSchema(TICK_V1)) == schema_id
    assert again.register("ticks-value", json.dumps(TICK_V1, indent=2)) == schema_id  # other spacing
    assert again.get_versions("ticks-value") == [1]

    found = again.check_version("ticks-value", AvroSchema(TICK_V1))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, "ticks-value")

    by_id = SchemaRegistryClient(registry.url).get_by_id(schema_id)
    assert by_id is not None and by_id.raw_schema == TICK_V1

    latest = again.get_schema("ticks-value")
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert latest.schema.raw_schema == TICK_V1
    assert again.get_schema("ticks-value", version=1).schema_id == schema_id

    assert again.get_subjects() == ["ticks-value"]
    assert again.get_schema_subject_versions(schema_id) == [SubjectVersion("ticks-value", 1)]


def test_same_schema_under_two_subjects_has_one_id(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    first = client.register("a-value", AvroSchema(TICK_V1))
    # Key order does not make another schema.
    reordered = dict(reversed(list(TICK_V1.items())))
    assert SchemaRegistryClient(registry.url).register("b-value", json.dumps(reordered)) == first
    assert sorted(client.get_subjects()) == ["a-value", "b-value"]
    assert client.get_schema_subject_versions(first) == [SubjectVersion("a-value", 1), SubjectVersion("b-value", 1)]


def test_compatible_and_incompatible_evolutions(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    v1 = client.register("ticks-value", AvroSchema(TICK_V1))
    v2 = client.register("ticks-value", AvroSchema(TICK_V2))
    assert v2 != v1
    assert client.get_versions("ticks-value") == [1, 2]
    assert client.get_schema("ticks-value").version == 2

    with pytest.raises(ClientError) as refused:
        client.register("ticks-value", AvroSchema(TICK_REQUIRED_FIELD))
    assert refused.value.http_code == 409
    body = refused.value.server_traceback
    assert body["error_code"] == 409
    assert 'reader field "size"' in body["message"] and "no default" in body["message"]

    with pytest.raises(ClientError) as refused:
        client.register("ticks-value", AvroSchema(TICK_PRICE_AS_STRING))
    assert refused.value.http_code == 409
    assert 'at /fields/price: writer type "double" cannot be read as "string"' in refused.value.server_traceback["message"]

    assert client.get_versions("ticks-value") == [1, 2]  # nothing was added


def test_test_compatibility(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    client.register("ticks-value", AvroSchema(TICK_V1))
    assert client.test_compatibility("ticks-value", AvroSchema(TICK_V2)) is True
    assert client.test_compatibility("ticks-value", AvroSchema(TICK_PRICE_AS_STRING)) is False
    assert client.test_compatibility("ticks-value", AvroSchema(TICK_V2), version=1) is True

    verbose = client.test_compatibility("ticks-value", AvroSchema(TICK_PRICE_AS_STRING), verbose=True)
    assert verbose["is_compatible"] is False
    assert any("/fields/price" in message for message in verbose["messages"])

    # Unknown subject or version: the client reads the 404 as "not compatible".
    assert client.test_compatibility("nobody-value", AvroSchema(TICK_V1)) is False
    assert client.test_compatibility("ticks-value", AvroSchema(TICK_V1), version=9) is False


def test_config_levels(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    assert client.get_compatibility() == "BACKWARD"
    assert client.get_compatibility("ticks-value") == "BACKWARD"  # falls back to the global level

    assert client.update_compatibility("FULL") is True
    assert client.get_compatibility() == "FULL"
    assert client.get_compatibility("ticks-value") == "FULL"

    assert client.update_compatibility("NONE", "ticks-value") is True
    assert client.get_compatibility("ticks-value") == "NONE"
    assert client.get_compatibility() == "FULL"

    # With NONE, even an incompatible change registers.
    client.register("ticks-value", AvroSchema(TICK_V1))
    client.register("ticks-value", AvroSchema(TICK_PRICE_AS_STRING))
    assert client.get_versions("ticks-value") == [1, 2]

    response = raw(registry, "PUT", "/config", {"compatibility": "SIDEWAYS"})
    assert response.status_code == 422 and response.json()["error_code"] == 42203
    response = raw(registry, "PUT", "/config/ticks-value", {"compatibility": "FORWARD"})
    assert response.json() == {"compatibility": "FORWARD"}
    assert raw(registry, "GET", "/config/ticks-value").json() == {"compatibilityLevel": "FORWARD"}


def test_soft_deletes(registry: RegistryThread) -> None:
    client = SchemaRegistryClient(registry.url)
    v1 = client.register("ticks-value", AvroSchema(TICK_V1))
    client.register("ticks-value", AvroSchema(TICK_V2))
    client.update_compatibility("NONE", "ticks-value")

    assert client.delete_version("ticks-value", "latest") == 2
    assert client.get_versions("ticks-value") == [1]
    assert client.delete_version("ticks-value", 7) is None  # 404: the client returns None

    assert client.delete_subject("ticks-value") == [1]
    assert client.get_subjects() == []
    assert client.get_versions("ticks-value") == []
    assert client.get_compatibility("ticks-value") == "BACKWARD"  # its own level went with it
    # Ids stay readable for consumers holding old messages.
    assert SchemaRegistryClient(registry.url).get_by_id(v1).raw_schema == TICK_V1
    assert raw(registry, "GET", "/subjects?deleted=true").json() == ["ticks-value"]

    # Registering again continues the numbering and reuses the id.
    assert SchemaRegistryClient(registry.url).register("ticks-value", AvroSchema(TICK_V1)) == v1
    assert client.get_versions("ticks-value") == [3]


def test_error_responses(registry: RegistryThread) -> None:
    assert raw(registry, "GET", "/").json() == {}
    response = raw(registry, "GET", "/subjects")
    assert response.headers["content-type"].startswith(CONTENT_TYPE)

    def error(method: str, path: str, body: Any = None) -> tuple[int, int]:
        response = raw(registry, method, path, body)
        payload = response.json()
        assert isinstance(payload["message"], str) and payload["message"]
        return response.status_code, payload["error_code"]

    assert error("GET", "/subjects/nobody/versions") == (404, 40401)
    assert error("GET", "/subjects/nobody/versions/latest") == (404, 40401)
    assert error("POST", "/subjects/nobody", {"schema": json.dumps(TICK_V1)}) == (404, 40401)
    assert error("GET", "/schemas/ids/999") == (404, 40403)
    assert error("GET", "/schemas/ids/999/versions") == (404, 40403)
    assert error("POST", "/subjects/ticks-value/versions", {"schema": "{not json"}) == (422, 42201)
    assert error("POST", "/subjects/ticks-value/versions", {"schema": '{"type": "nosuch"}'}) == (422, 42201)
    assert error("POST", "/subjects/ticks-value/versions", {}) == (422, 42201)

    response = raw(registry, "POST", "/subjects/ticks-value/versions",
                   {"schema": '{"type": "object"}', "schemaType": "JSON"})
    assert response.status_code == 422 and "AVRO schemas only" in response.json()["message"]

    assert raw(registry, "POST", "/subjects/ticks-value/versions", {"schema": json.dumps(TICK_V1)}).json() == {"id": 1}
    assert error("GET", "/subjects/ticks-value/versions/2") == (404, 40402)
    assert error("GET", "/subjects/ticks-value/versions/zero") == (422, 42202)
    assert error("GET", "/subjects/ticks-value/versions/0") == (422, 42202)
    assert error("POST", "/subjects/ticks-value", {"schema": json.dumps(TICK_V2)}) == (404, 40403)
    assert error("GET", "/no/such/route") == (404, 404)

    found = raw(registry, "POST", "/subjects/ticks-value", {"schema": json.dumps(TICK_V1)}).json()
    assert found == {"subject": "ticks-value", "id": 1, "version": 1, "schema": found["schema"]}
    assert json.loads(found["schema"]) == TICK_V1
    assert raw(registry, "GET", "/subjects/ticks-value/versions/-1").json()["version"] == 1
    assert json.loads(raw(registry, "GET", "/subjects/ticks-value/versions/1/schema").text) == TICK_V1
    assert raw(registry, "GET", "/schemas/types").json() == ["AVRO"]


def test_survives_a_registry_restart(dsn: str) -> None:
    first = RegistryThread(dsn).start()
    try:
        client = SchemaRegistryClient(first.url)
        v1 = client.register("ticks-value", AvroSchema(TICK_V1))
        v2 = client.register("ticks-value", AvroSchema(TICK_V2))
        client.update_compatibility("FULL_TRANSITIVE", "ticks-value")
    finally:
        first.stop()

    second = RegistryThread(dsn).start()
    try:
        client = SchemaRegistryClient(second.url)
        assert client.get_versions("ticks-value") == [1, 2]
        assert client.get_by_id(v1).raw_schema == TICK_V1
        assert client.get_by_id(v2).raw_schema == TICK_V2
        assert client.get_schema("ticks-value", 1).schema_id == v1
        assert client.get_schema("ticks-value").schema_id == v2
        assert client.get_compatibility("ticks-value") == "FULL_TRANSITIVE"
        assert client.register("ticks-value", AvroSchema(TICK_V2)) == v2
        # The next new schema gets a new id and version 3.
        v3_schema = {**TICK_V2, "doc": "ticks, now documented"}
        assert client.register("ticks-value", AvroSchema(v3_schema)) not in (v1, v2)
        assert client.get_versions("ticks-value") == [1, 2, 3]
    finally:
        second.stop()


def test_database_errors_are_500_50001_and_the_server_keeps_serving(
    registry: RegistryThread, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def drop_tables() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP SCHEMA schema_registry CASCADE")
        finally:
            await conn.close()

    asyncio.run(drop_tables())
    with caplog.at_level(logging.ERROR, logger="app.stack.registry.server"):
        response = raw(registry, "GET", "/subjects")
    assert response.status_code == 500
    assert response.json()["error_code"] == 50001
    assert any("database error on GET /subjects" in r.getMessage() for r in caplog.records)
    assert raw(registry, "GET", "/").json() == {}


def test_recovers_from_lost_database_connections(registry: RegistryThread, pg: EmbeddedPostgres, dsn: str) -> None:
    client = SchemaRegistryClient(registry.url)
    schema_id = client.register("ticks-value", AvroSchema(TICK_V1))

    async def terminate_registry_connections() -> int:
        conn = await asyncpg.connect(pg.dsn("postgres"))
        try:
            return await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = $1 AND application_name = 'cryptics-schema-registry'",
                dsn.rsplit("/", 1)[1],
            )
        finally:
            await conn.close()

    assert asyncio.run(terminate_registry_connections()) >= 1
    # A request may meet a dead connection (a 500, 50001); the pool replaces it.
    codes = []
    for _ in range(5):
        response = raw(registry, "GET", f"/schemas/ids/{schema_id}")
        codes.append(response.status_code)
        if response.status_code == 200:
            break
        assert response.json()["error_code"] == 50001
    assert codes[-1] == 200, codes


# -- the asynchronous client and concurrency ------------------------------------------------


async def test_async_client(registry: RegistryThread) -> None:
    client = AsyncSchemaRegistryClient(registry.url)
    schema_id = await client.register("ticks-value", AvroSchema(TICK_V1))
    assert await AsyncSchemaRegistryClient(registry.url).register("ticks-value", AvroSchema(TICK_V1)) == schema_id
    assert (await AsyncSchemaRegistryClient(registry.url).get_by_id(schema_id)).raw_schema == TICK_V1
    assert (await client.check_version("ticks-value", AvroSchema(TICK_V1))).version == 1
    assert await client.get_versions("ticks-value") == [1]
    assert await client.test_compatibility("ticks-value", AvroSchema(TICK_V2)) is True
    assert await client.get_compatibility() == "BACKWARD"
    with pytest.raises(ClientError) as refused:
        await client.register("ticks-value", AvroSchema(TICK_PRICE_AS_STRING))
    assert refused.value.http_code == 409


async def test_concurrent_registrations_of_one_schema_get_one_id(registry: RegistryThread) -> None:
    # Separate clients, so no client-side cache hides a request.
    ids = await asyncio.gather(*[
        AsyncSchemaRegistryClient(registry.url).register("ticks-value", AvroSchema(TICK_V1)) for _ in range(10)
    ])
    assert len(set(ids)) == 1
    assert await AsyncSchemaRegistryClient(registry.url).get_versions("ticks-value") == [1]


async def test_concurrent_registrations_through_two_registries_have_no_gaps(dsn: str) -> None:
    first, second = RegistryThread(dsn).start(), RegistryThread(dsn).start()
    try:
        await AsyncSchemaRegistryClient(first.url).update_compatibility("NONE", "ticks-value")
        schemas = [{**TICK_V1, "doc": f"variant {i}"} for i in range(12)]
        ids = await asyncio.gather(*[
            AsyncSchemaRegistryClient((first, second)[i % 2].url).register("ticks-value", AvroSchema(schema))
            for i, schema in enumerate(schemas)
        ])
        assert len(set(ids)) == 12
        client = AsyncSchemaRegistryClient(second.url)
        assert await client.get_versions("ticks-value") == list(range(1, 13))
        # The same schemas in another subject, also concurrently, get the same ids.
        await client.update_compatibility("NONE", "other-value")
        again = await asyncio.gather(*[
            AsyncSchemaRegistryClient((second, first)[i % 2].url).register("other-value", AvroSchema(schema))
            for i, schema in enumerate(schemas)
        ])
        assert sorted(again) == sorted(ids)
    finally:
        first.stop()
        second.stop()


async def test_concurrent_startups_create_the_tables_once(dsn: str) -> None:
    stores = await asyncio.gather(*[RegistryStore.open(dsn, min_size=1, max_size=1) for _ in range(6)])
    try:
        assert await stores[0].subjects() == []
    finally:
        await asyncio.gather(*[store.close() for store in stores])


# -- serve() as a process ------------------------------------------------------------------


def test_serve_runs_until_sigterm(dsn: str, tmp_path: Path) -> None:
    port = free_port()
    code = ("import asyncio, logging, os, sys; "
            "logging.basicConfig(level=logging.INFO); "
            "from app.stack.registry.server import serve; "
            "asyncio.run(serve(os.environ['REGISTRY_DSN'], '127.0.0.1', int(sys.argv[1])))")
    child = spawn("registry", [sys.executable, "-c", code, str(port)], log_path=tmp_path / "registry.log",
                  env={**os.environ, "REGISTRY_DSN": dsn, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while "schema registry listening on" not in child.log_tail():
            assert child.alive(), child.log_tail()
            assert time.monotonic() < deadline, child.log_tail()
            time.sleep(0.05)
        assert f"schema registry listening on http://127.0.0.1:{port}" in child.log_tail()
        assert httpx.get(f"http://127.0.0.1:{port}/").json() == {}
        child.popen.send_signal(signal.SIGTERM)
        assert child.popen.wait(15) == 0, child.log_tail()
        assert "schema registry stopped" in child.log_tail()
    finally:
        child.stop()
