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

After every run the read-only role of the dashboards (``cryptics_reader``, 0008) gets its
grants again, and ``reader_password`` makes ``cryptics_grafana`` a login role with those
rights (docs/operations.md#dashboards).
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


#: The login role Grafana reads as: no rights of its own, only cryptics_reader's.
READER_LOGIN = "cryptics_grafana"


async def migrate(dsn: str, folder: Path = MIGRATIONS_DIR, *, conn: Optional[asyncpg.Connection] = None,
                  reader_password: Optional[str] = None) -> MigrationReport:
    """Apply every pending migration in ``folder`` to the database at ``dsn``; with
    ``reader_password``, create (or update the password of) the dashboards' login role."""
    migrations = discover(folder)
    own = conn is None
    conn = conn or await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            report = await _apply(conn, migrations)
            if await conn.fetchval("SELECT to_regproc('cryptics_grant_reader') IS NOT NULL"):
                await conn.execute("SELECT cryptics_grant_reader()")
                if reader_password is not None:
                    await _reader_login(conn, reader_password)
            elif reader_password is not None:
                raise MigrationError("a reader password was given, but no migration here creates cryptics_reader")
            return report
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


async def _reader_login(conn: asyncpg.Connection, password: str) -> None:
    """``cryptics_grafana``: LOGIN with ``password``, a member of cryptics_reader and nothing else.
    The password goes in as a quoted literal built by the server (``format('%L')``): utility
    statements take no parameters, and it never appears in a log line of ours."""
    if not password:
        raise MigrationError("the reader password is empty")
    exists = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", READER_LOGIN)
    verb = "ALTER" if exists else "CREATE"
    statement = await conn.fetchval(
        f"SELECT format('{verb} ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT PASSWORD %L', $1::text, $2::text)",
        READER_LOGIN, password)
    try:
        await conn.execute(statement)
    except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):  # a concurrent runner made it
        await conn.execute(statement.replace("CREATE ROLE", "ALTER ROLE", 1))
    await conn.execute(f"GRANT cryptics_reader TO {READER_LOGIN}")
