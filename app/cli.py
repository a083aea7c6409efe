"""The ``cryptics`` command line. Every command has ``--help``.

    cryptics up               the embedded stack (broker, PostgreSQL, registry) plus the worker
    cryptics worker           only the Faust worker, against the services in CRYPTICS_* URLs
    cryptics registry         only the embedded schema registry
    cryptics venue            only the simulated Thalex venue
    cryptics db migrate       apply timescale/ migrations
    cryptics topics create    create the pipeline topics with the configured partitions
"""
from __future__ import annotations

import asyncio
import logging
import sys

import click

from . import settings as settings_module


def _settings() -> settings_module.Settings:
    try:
        return settings_module.load()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CrypticsLab: quote Thalex perpetuals, stream everything into TimescaleDB.

    Configuration comes from CRYPTICS_* environment variables (app/settings.py).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
def up() -> None:
    """Start broker, PostgreSQL, schema registry, simulated venue and worker; Ctrl-C stops them all.

    Services given by URL (CRYPTICS_BROKER_URL, CRYPTICS_DATABASE_URL,
    CRYPTICS_SCHEMA_REGISTRY_URL, CRYPTICS_VENUE_URL) are used instead of starting
    embedded ones; CRYPTICS_VENUE=testnet or production trades on Thalex instead
    of the simulated venue (credentials from CRYPTICS_THALEX_*).
    """
    from .stack import supervisor

    logging.getLogger().setLevel(logging.WARNING)  # `up` prints its own progress lines
    sys.exit(asyncio.run(supervisor.run(_settings())))


@main.command()
def worker() -> None:
    """Run the Faust worker against the services named in CRYPTICS_* URLs."""
    from . import worker as worker_module

    worker_module.run(_settings())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8081, show_default=True, help="Port to listen on (0: any free port).")
def registry(host: str, port: int) -> None:
    """Serve the embedded schema registry (Confluent REST subset), stored in CRYPTICS_DATABASE_URL."""
    from .registry import server

    s = _settings()
    if not s.database_url:
        raise click.ClickException("the registry stores schemas in PostgreSQL: set CRYPTICS_DATABASE_URL")
    asyncio.run(server.serve(s.database_url, host, port))


@main.command()
def venue() -> None:
    """Run the simulated Thalex venue alone (ws://host:port/ws/api/v2).

    Every parameter is a CRYPTICS_VENUE_<FIELD> variable (app/venue/config.py),
    e.g. CRYPTICS_VENUE_PORT=8765 CRYPTICS_VENUE_SEED=7. Logins are checked against
    the PEM public keys in CRYPTICS_VENUE_TRUSTED_KEYS_DIR (<state>/venue/trusted_keys).
    """
    from .venue import serve

    s = _settings()
    try:
        config = s.venue_config()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(serve(config))


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending timescale/ migrations to CRYPTICS_DATABASE_URL (each once)."""
    from . import migrate

    s = _settings()
    if not s.database_url:
        raise click.ClickException("set CRYPTICS_DATABASE_URL (the embedded database is migrated by `cryptics up`)")
    report = asyncio.run(migrate.migrate(s.database_url))
    click.echo(f"applied: {list(report.applied)}; already applied: {list(report.already)}; "
               f"TimescaleDB {'present' if report.timescaledb else 'absent'}"
               + (f"; skipped TimescaleDB-only: {list(report.skipped_timescaledb)}" if report.skipped_timescaledb else ""))


@main.group()
def topics() -> None:
    """Kafka topic commands."""


@topics.command("create")
def topics_create() -> None:
    """Create the pipeline topics on CRYPTICS_BROKER_URL with CRYPTICS_TOPIC_PARTITIONS partitions."""
    from . import topics as topics_module

    s = _settings()
    if not s.broker_url:
        raise click.ClickException("set CRYPTICS_BROKER_URL (`cryptics up` creates topics on the embedded broker)")
    try:
        report = asyncio.run(topics_module.ensure_topics(
            s.broker_url, topics_module.PIPELINE_TOPICS, s.topic_partitions, s.topic_replication))
    except topics_module.TopicMismatch as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created: {list(report.created)}; already there: {list(report.existing)}")


if __name__ == "__main__":
    main(prog_name="cryptics")
