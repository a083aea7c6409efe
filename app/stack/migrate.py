"""The migration runner for timescale/ (``cryptics db migrate``).

Migrations are SQL files named ``NNNN_description.sql``, applied in number order,
each once, each in its own transaction, and recorded in ``cryptics_migrations``
with a checksum. A file whose name ends in ``.timescaledb.sql`` holds
TimescaleDB-only DDL (hypertables, policies, continuous aggregates): it runs only
when ``pg_available_extensions`` lists timescaledb (docs/architecture.md#d7-database), after
``CREATE EXTENSION IF NOT EXISTS timescaledb``; on plain PostgreSQL it is skipped
and not recorded, so it applies once the extension becomes available.

A session-level advisory lock makes concurrent runners (two workers starting at
once) take turns. Editing a migration that was already applied is an error: add
a new one instead.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import asyncpg

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "timescale"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(\.timescaledb)?\.sql$")
_LOCK_KEY = 0x63727970746963  # "cryptic": any constant shared by all runners

TRACKING_DDL = """
CREATE TABLE IF NOT EXISTS cryptics_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    timescaledb_only: bool

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``folder``, in order; malformed names and duplicate numbers are errors."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(
                f"{path.name}: migration files are named NNNN_description.sql "
                "(or NNNN_description.timescaledb.sql)"
            )
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}: {found[version].path.name}, {path.name}")
        found[version] = Migration(version, match.group(2), path, bool(match.group(3)))
    return [found[v] for v in sorted(found)]


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[int, ...]
    skipped_timescaledb: tuple[int, ...]
    already: tuple[int, ...]
    timescaledb: bool


async def timescaledb_available(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))


async def migrate(dsn: str, folder: Path = MIGRATIONS_DIR, *, conn: Optional[asyncpg.Connection] = None) -> MigrationReport:
    """Apply every pending migration in ``folder`` to the database at ``dsn``."""
    migrations = discover(folder)
    own = conn is None
    conn = conn or await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        if own:
            await conn.close()


async def _apply(conn: asyncpg.Connection, migrations: list[Migration]) -> MigrationReport:
    await conn.execute(TRACKING_DDL)
    done = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM cryptics_migrations")}
    has_timescaledb = await timescaledb_available(conn)
    applied, skipped, already = [], [], []
    for m in migrations:
        record = done.get(m.version)
        if record is not None:
            if record["checksum"] != m.checksum:
                raise MigrationError(
                    f"migration {m.path.name} changed after it was applied "
                    f"(recorded checksum {record['checksum'][:12]}…, file {m.checksum[:12]}…); "
                    "add a new migration instead of editing an applied one"
                )
            already.append(m.version)
            continue
        if m.timescaledb_only and not has_timescaledb:
            skipped.append(m.version)
            continue
        async with conn.transaction():
            if m.timescaledb_only:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO cryptics_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version, m.name, m.checksum,
            )
        log.info("applied migration %s", m.path.name)
        applied.append(m.version)
    return MigrationReport(tuple(applied), tuple(skipped), tuple(already), has_timescaledb)
