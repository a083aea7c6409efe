"""The integration tier: real broker, PostgreSQL, registry, venue and worker processes on free
loopback ports, cleaned up after use. Every test here carries the ``integration`` marker, so
``pytest -m "not integration"`` (or ``pytest tests/unit``) starts none of them.

Shared fixtures:

- ``service_root``: a folder the PostgreSQL service user can reach (mode 0755;
  pytest's own tmp folders are 0700, which a non-root postgres cannot traverse).
- ``postgres``: one embedded PostgreSQL for the session; ``database`` gives each
  test its own fresh database on it.
- ``broker``: a fresh Tansu broker per test (memory storage, so state is per test).
- ``registry_url``: the embedded schema registry as a real ``cryptics registry`` process.
- ``analytics_stack``: the venue with a running market, for `cryptics worker` children that quote,
  persist and run the analytics (analytics_stack.py).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import aiohttp
import asyncpg
import pytest

from app.stack.broker import EmbeddedBroker
from app.stack.postgres import EmbeddedPostgres
from app.stack.process import Child, environ_for_child, free_port, spawn
from app.venue import Venue, create_keypair
from tests.integration.venue_wire import KID, WsClient, connect, venue_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def service_root() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="cryptics-test-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(service_root: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(service_root / "pgdata", service_root / "logs")
    asyncio.run(pg.start())
    yield pg
    pg.stop()


async def _admin(pg: EmbeddedPostgres, sql: str) -> None:
    conn = await asyncpg.connect(pg.dsn("postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def database(postgres: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database for one test; its DSN."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres, f'CREATE DATABASE "{name}"'))
    yield postgres.dsn(name)
    asyncio.run(_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(tmp_path / "logs")
    asyncio.run(b.start())
    yield b
    b.stop()


def cryptics(*args: str) -> list[str]:
    """argv for running the CLI of this checkout in a child process."""
    return [sys.executable, "-m", "app.cli", *args]


def start_registry(database_url: str, log_dir: Path, port: int | None = None) -> tuple[Child, str]:
    port = port or free_port()
    child = spawn(
        "registry", cryptics("registry", "--port", str(port)),
        log_path=log_dir / "registry.log",
        env=environ_for_child({"CRYPTICS_DATABASE_URL": database_url}), cwd=ROOT,
    )
    return child, f"http://127.0.0.1:{port}"


@pytest.fixture
def registry_url(database: str, tmp_path: Path) -> Iterator[str]:
    """A running ``cryptics registry`` on a fresh database; its URL."""
    import urllib.request

    from app.stack.process import wait_until

    child, url = start_registry(database, tmp_path / "logs")

    async def ready() -> bool:
        def get() -> bool:
            with urllib.request.urlopen(f"{url}/subjects", timeout=2) as r:
                return r.status == 200
        return await asyncio.get_running_loop().run_in_executor(None, get)

    try:
        asyncio.run(wait_until(ready, what="registry", timeout=30, child=child))
        yield url
    finally:
        child.stop()


_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


# -- the venue's wire tests (test_venue_*.py): a still venue and the bare client of venue_wire.py --

@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """(private key of KID, trusted keys folder)."""
    private, public = create_keypair(tmp_path / "keys", KID)
    return private, public.parent


@pytest.fixture
def private_key(keys: tuple[Path, Path]) -> Path:
    return keys[0]


@pytest.fixture
async def venue(keys: tuple[Path, Path]):
    v = Venue(venue_config(keys[1]))
    await v.start()
    try:
        yield v
    finally:
        await v.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(http: aiohttp.ClientSession, venue: Venue) -> WsClient:
    c = await connect(http, venue)
    yield c
    await c.ws.close()


@pytest.fixture
async def trader(client: WsClient, private_key: Path) -> WsClient:
    await client.login(private_key)
    return client



def database_url_of(urls: dict) -> str:
    """The embedded database's URL from up.json's ``urls``, whose ``database`` hides the password
    (``***``), with the password read from the file ``database_password_file`` names."""
    password = Path(urls["database_password_file"]).read_text().strip()
    return urls["database"].replace(":***@", f":{password}@", 1)

@pytest.fixture
async def analytics_stack(broker, registry_url, database, tmp_path):
    """The venue with a running market and room for workers (tests/integration/analytics_stack.py);
    every worker still alive at the end is killed (after a SIGCONT, in case a test stopped it)."""
    from .analytics_stack import Stack  # here, not at the top: that module imports this one

    stack = Stack(broker, registry_url, database, tmp_path)
    await stack.start()
    try:
        yield stack
    finally:
        for child, _ in stack.workers.values():
            if child.alive():
                os.kill(child.pid, signal.SIGCONT)
                child.popen.kill()
                child.popen.wait(10)
        await stack.venue.stop()
