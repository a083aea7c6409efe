"""The ``cryptics`` command line. Every command has ``--help``.

    cryptics up               the embedded stack (broker, PostgreSQL, registry) plus the worker
    cryptics status           the children of a running `cryptics up`: state, pid, restarts
    cryptics worker           only the Faust worker, against the services in CRYPTICS_* URLs
    cryptics registry         only the embedded schema registry
    cryptics venue            only the simulated Thalex venue
    cryptics db migrate       apply timescale/ migrations
    cryptics topics create    create the pipeline topics with the configured partitions
    cryptics deadletter list  the dead letters: records the persistence agents could not write
    cryptics deadletter replay  put chosen dead letters back on their source topic after a fix
    cryptics record export    a recorded range to a Parquet dataset; `record import` loads one
    cryptics backtest         replay a recorded range through the strategy code; report or sweep
"""
from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timezone

import click

from app import settings as settings_module
from app.config import SettingsErrors


class SettingsRefused(click.ClickException):
    """Bad settings: a line for each refused variable, no traceback, exit code 2 (a usage error,
    as for a bad option). Every command reads its settings before it starts anything."""

    exit_code = 2

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines

    def show(self, file=None) -> None:
        for line in self.lines:
            click.echo(f"cryptics: {line}", err=True)
        click.echo(f"cryptics: {len(self.lines)} bad setting{'s' if len(self.lines) > 1 else ''}; nothing started "
                   "(docs/operations.md lists every variable)", err=True)


def asyncpg_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's refusals of a connection (authentication, TLS set-up), for a one-line message."""
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.ClientConfigurationError)


def _settings() -> settings_module.Settings:
    try:
        return settings_module.load()
    except SettingsErrors as exc:
        raise SettingsRefused(exc.lines) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """CrypticsLab: quote Thalex perpetuals, stream everything into TimescaleDB.

    Configuration comes from CRYPTICS_* environment variables (app/settings.py).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A service `cryptics up` started goes when `up` goes, even when `up` was killed with -9.
    from app.stack.process import exit_when_orphaned

    exit_when_orphaned()


@main.command()
def up() -> None:
    """Start broker, PostgreSQL, schema registry, simulated venue and worker; Ctrl-C stops them all.

    A child that exits is started again after a backoff; 5 exits of one child within 60 s stop
    the stack (exit code 1). `cryptics status` shows the children (docs/operations.md#supervision).

    Services given by URL (CRYPTICS_BROKER_URL, CRYPTICS_DATABASE_URL,
    CRYPTICS_SCHEMA_REGISTRY_URL, CRYPTICS_VENUE_URL) are used instead of starting
    embedded ones; CRYPTICS_VENUE=testnet or production trades on Thalex instead
    of the simulated venue (credentials from CRYPTICS_THALEX_*).
    """
    s = _settings()
    from app.stack import supervisor

    conflicts = supervisor.embedded_conflicts(s)
    if conflicts:
        raise SettingsRefused(conflicts)
    logging.getLogger().setLevel(logging.WARNING)  # `up` prints its own progress lines
    sys.exit(asyncio.run(supervisor.run(s)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print up.json as it is instead of the table.")
def status(as_json: bool) -> None:
    """Show the stack `cryptics up` runs: each child's state, pid, restarts and last exit.

    Reads <state folder>/up.json (CRYPTICS_STATE_DIR). Exit code 0 when the stack is up,
    1 while a child is being restarted, 3 when no stack runs.
    """
    import json

    from app.stack import status as status_module
    from app.stack.process import pid_alive

    path = _settings().state_dir / "up.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        state = None
    alive = state is not None and isinstance(state.get("pid"), int) and pid_alive(state["pid"])
    text, code = status_module.describe(state, alive)
    click.echo(json.dumps(state, indent=2) if as_json and state is not None else text)
    sys.exit(code)


@main.command()
def worker() -> None:
    """Run the Faust worker against the services named in CRYPTICS_* URLs."""
    s = _settings()  # before the import: the Faust app reads the settings as it is built
    from app import worker as worker_module

    worker_module.run(s)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8081, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve https with this certificate chain (PEM).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The certificate's private key (PEM), if not in --certfile.")
def registry(host: str, port: int, certfile, keyfile) -> None:
    """Serve the embedded schema registry (Confluent REST subset), stored in CRYPTICS_DATABASE_URL.

    With CRYPTICS_SCHEMA_REGISTRY_USERNAME and CRYPTICS_SCHEMA_REGISTRY_PASSWORD_FILE every
    request but GET / needs that basic auth (docs/operations.md#secured-connections)."""
    from app.security import SecretUnreadable, registry_basic_auth
    from app.stack.registry import server

    s = _settings()
    if not s.database_url:
        raise click.ClickException("the registry stores schemas in PostgreSQL: set CRYPTICS_DATABASE_URL")
    if keyfile and not certfile:
        raise click.ClickException("--keyfile needs --certfile")
    try:
        basic_auth = registry_basic_auth(s)
    except SecretUnreadable as exc:
        raise SettingsRefused([str(exc)]) from None
    context = server.server_ssl_context(certfile, keyfile) if certfile else None
    asyncio.run(server.serve(s.database_dsn, host, port, basic_auth=basic_auth, ssl_context=context))


@main.command()
def venue() -> None:
    """Run the simulated Thalex venue alone (ws://host:port/ws/api/v2).

    Every parameter is a CRYPTICS_VENUE_<FIELD> variable (app/venue/config.py),
    e.g. CRYPTICS_VENUE_PORT=8765 CRYPTICS_VENUE_SEED=7. Logins are checked against
    the PEM public keys in CRYPTICS_VENUE_TRUSTED_KEYS_DIR (<state>/venue/trusted_keys).
    """
    from app.venue import serve

    config = _settings().simulated_venue
    import uvloop  # the venue's I/O is in every tick → order measurement (benchmarks/bench_quoting.py)

    uvloop.run(serve(config))


@main.group()
def db() -> None:
    """Database commands."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending timescale/ migrations to CRYPTICS_DATABASE_URL (each once); with
    CRYPTICS_DATABASE_READER_PASSWORD_FILE, also the dashboards' read-only login."""
    from app.stack import migrate

    s = _settings()
    if not s.database_url:
        raise click.ClickException("set CRYPTICS_DATABASE_URL (the embedded database is migrated by `cryptics up`)")
    reader_password = None
    if s.database_reader_password_file is not None:
        try:
            reader_password = s.database_reader_password_file.read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"CRYPTICS_DATABASE_READER_PASSWORD_FILE: cannot read it ({exc.strerror})")
    try:
        report = asyncio.run(migrate.migrate(s.database_dsn, reader_password=reader_password))
    except (OSError, *asyncpg_errors()) as exc:  # ssl.SSLError is an OSError: a refused certificate
        from app.config import without_password

        raise click.ClickException(f"cannot reach the database {without_password(s.database_url)}: "
                                   f"{type(exc).__name__}: {exc}") from None
    click.echo(f"applied: {list(report.applied)}; already applied: {list(report.already)}; "
               f"TimescaleDB {'present' if report.timescaledb else 'absent'}"
               + (f"; skipped TimescaleDB-only: {list(report.skipped_timescaledb)}" if report.skipped_timescaledb else ""))


@main.group()
def topics() -> None:
    """Kafka topic commands."""


@topics.command("create")
def topics_create() -> None:
    """Create the pipeline topics on CRYPTICS_BROKER_URL with CRYPTICS_TOPIC_PARTITIONS partitions."""
    from app.pipeline import topics as topics_module

    s = _settings()
    if not s.broker_url:
        raise click.ClickException("set CRYPTICS_BROKER_URL (`cryptics up` creates topics on the embedded broker)")
    try:
        report = asyncio.run(topics_module.ensure_topics(
            s.broker_url, topics_module.PIPELINE_TOPICS, s.topic_partitions, s.topic_replication))
    except topics_module.TopicError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created: {list(report.created)}; already there: {list(report.existing)}")


@main.group()
def deadletter() -> None:
    """Dead letters: list the records the persistence agents could not write, replay them after a fix.

    A dead letter keeps the record's source topic, partition, offset, key, value bytes
    and the error (docs/architecture.md#d8-persistence-semantics). Its id is its PARTITION:OFFSET on the dead-letter topic.
    Needs CRYPTICS_BROKER_URL and CRYPTICS_SCHEMA_REGISTRY_URL.
    """
    # Progress lines of the Kafka client (and the Tansu end-offset correction) would
    # drown the listing; warnings still show.
    logging.getLogger().setLevel(logging.WARNING)


class _LetterIdType(click.ParamType):
    name = "PARTITION:OFFSET"

    def convert(self, value, param, ctx):
        from app.pipeline.deadletter import LetterId

        if not isinstance(value, str):
            return value
        try:
            return LetterId.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _dead_letter_stages() -> tuple[str, ...]:
    """The DeadLetterStage symbols of the newest dead-letter schema (decode, row, database)."""
    # From the schema file, not app.pipeline.deadletter: importing Kafka and Faust here would slow
    # down every command, `--help` included.
    from models.schemas import load

    stage = next(f for f in load("dead_letter")["fields"] if f["name"] == "stage")
    return tuple(stage["type"]["symbols"])


def _filter_options(command):
    for option in reversed([
        click.option("--topic", "source_topics", multiple=True, metavar="TOPIC",
                     help="Only dead letters from this source topic (repeatable)."),
        click.option("--stage", "stages", multiple=True, type=click.Choice(_dead_letter_stages()),
                     help="Only dead letters of this stage (repeatable)."),
        click.option("--table", "target_tables", multiple=True, metavar="TABLE",
                     help="Only dead letters meant for this table (repeatable)."),
    ]):
        command = option(command)
    return command


def _deadletter_services() -> tuple[str, str]:
    s = _settings()
    if not s.broker_url:
        raise click.ClickException("set CRYPTICS_BROKER_URL: the broker that holds the dead-letter topic")
    if not s.schema_registry_url:
        raise click.ClickException(
            "set CRYPTICS_SCHEMA_REGISTRY_URL: dead letters are Avro, decoded through the registry")
    return s.broker_url, s.schema_registry_url


def _run_deadletter(coroutine):
    """Run ``coroutine``; what went wrong on the way becomes a message, not a traceback."""
    from aiokafka.errors import KafkaError

    from app.pipeline.deadletter import DeadLetterError

    try:
        return asyncio.run(coroutine)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise click.ClickException(f"broker or registry unreachable: {type(exc).__name__}: {exc}") from None


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _letter_table(letters) -> str:
    header = ("ID", "FAILED AT (UTC)", "STAGE", "SOURCE", "TABLE", "ERROR")
    rows = [(str(s.id), s.letter.failed_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), s.letter.stage,
             s.source, s.letter.target_table or "-", _shorten(s.letter.error, 60)) for s in letters]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip()
                     for row in [header, *rows])


@deadletter.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True,
              help="One JSON array, every field but the value bytes (given as value_length).")
def deadletter_list(source_topics: tuple[str, ...], stages: tuple[str, ...], target_tables: tuple[str, ...],
                    as_json: bool) -> None:
    """List the dead letters on the dead-letter topic, oldest first per partition.

    The table shows each dead letter's id (PARTITION:OFFSET on the dead-letter topic),
    when it failed, its stage (decode, row, database), where the record came from
    (topic[partition]@offset), the table it was meant for and the error, shortened
    (--json has it whole).
    """
    import json

    from app.pipeline import deadletter as dl

    broker_url, registry_url = _deadletter_services()
    letters = dl.select(_run_deadletter(dl.read_dead_letters(broker_url, registry_url)),
                        topics=source_topics, stages=stages, tables=target_tables)
    if as_json:
        click.echo(json.dumps([s.as_json() for s in letters], indent=2))
        return
    if not letters:
        filtered = bool(source_topics or stages or target_tables)
        click.echo(f"no dead letters on {dl.dead_letter_topic()}" + (" matching the filters" if filtered else ""))
        return
    click.echo(_letter_table(letters))
    click.echo(f"{len(letters)} dead letter{'s' if len(letters) != 1 else ''} on {dl.dead_letter_topic()}")


@deadletter.command("replay")
@click.option("--id", "ids", multiple=True, type=_LetterIdType(),
              help="Replay the dead letter with this id (repeatable); ids from `cryptics deadletter list`.")
@_filter_options
@click.option("--all", "replay_all", is_flag=True,
              help="Replay every dead letter, or every one matching --topic/--stage/--table.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; produce nothing.")
def deadletter_replay(ids, source_topics: tuple[str, ...], stages: tuple[str, ...], target_tables: tuple[str, ...],
                      replay_all: bool, dry_run: bool) -> None:
    """Put chosen dead letters back on their source topic, so the persistence agents retry them.

    Choose with one or more --id PARTITION:OFFSET, or with --all (narrowed by --topic,
    --stage, --table); without either nothing is replayed. Each record's original key
    and value bytes go back unchanged to its original partition of its source topic,
    one at a time, each delivered (acks=all) before the next. A dead letter without a
    value has nothing to replay and is skipped with a message.

    Safe to repeat: the tables have natural keys (ON CONFLICT DO NOTHING, docs/architecture.md#d8-persistence-semantics),
    so a record replayed twice is written once. A record that still fails becomes a new
    dead letter; replayed ones stay listed (dead letters are never deleted).
    """
    filtered = bool(source_topics or stages or target_tables)
    if ids and (replay_all or filtered):
        raise click.UsageError("--id picks exact dead letters; --all with --topic/--stage/--table picks by filter. "
                               "Use one or the other.")
    if not ids and not replay_all:
        raise click.UsageError("nothing chosen: give --id PARTITION:OFFSET (repeatable), or --all to replay "
                               "every dead letter" + (" matching the filters" if filtered else "")
                               + " (`cryptics deadletter list` shows them)")

    broker_url, registry_url = _deadletter_services()
    # Imported after the checks: refusing a selection should not wait for Kafka and Faust to load.
    from app.pipeline import deadletter as dl

    async def run():
        letters = await dl.read_dead_letters(broker_url, registry_url)
        chosen = (dl.pick(letters, ids) if ids
                  else dl.select(letters, topics=source_topics, stages=stages, tables=target_tables))
        return chosen, await dl.replay(broker_url, chosen, dry_run=dry_run)

    chosen, outcomes = _run_deadletter(run())
    if not chosen:
        click.echo(f"no dead letters on {dl.dead_letter_topic()}" + (" matching the filters" if filtered else "")
                   + ": nothing to replay")
        return
    for outcome in outcomes:
        click.echo(outcome.describe())
    replayed = sum(o.status in ("replayed", "would replay") for o in outcomes)
    skipped = len(outcomes) - replayed
    verb = "would replay" if dry_run else "replayed"
    click.echo(f"{verb} {replayed} of {len(outcomes)} chosen; skipped {skipped}"
               + (" (dry run: nothing produced)" if dry_run else ""))


# -- cryptics record ------------------------------------------------------------------------------


class RecordingRefused(click.ClickException):
    """Bad input to `cryptics record`: its one line, exit code 2 (as for a bad option)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"cryptics: {self.message}", err=True)


def _recording_database() -> str:
    s = _settings()
    if not s.database_url:
        raise click.ClickException("set CRYPTICS_DATABASE_URL: the database the recording is read from or written to")
    return s.database_dsn


def _run_recording(coroutine):
    """Run ``coroutine``; bad input becomes its one line (exit 2), an unreachable database a message."""
    from app.pipeline.recording import RecordingError

    try:
        return asyncio.run(coroutine)
    except RecordingError as exc:
        raise RecordingRefused(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"database unreachable: {type(exc).__name__}: {exc}") from None


@main.group()
def record() -> None:
    """Recorded ranges as Parquet datasets: export them to share or replay, import them elsewhere.

    A dataset is a directory with one Parquet file per table (the tables' own columns) and
    manifest.json (docs/operations.md#recordings). Needs CRYPTICS_DATABASE_URL.
    """


@record.command("export")
@click.option("--from", "start", required=True, metavar="ISO", help="Start of the range (ISO 8601 with a zone).")
@click.option("--to", "end", required=True, metavar="ISO", help="End of the range, exclusive.")
@click.option("--instrument", "instruments", multiple=True, metavar="NAME",
              help="Only this instrument (repeatable; default: every instrument).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="The dataset directory to create (new, or empty).")
def record_export(start: str, end: str, instruments: tuple[str, ...], out_dir: str) -> None:
    """Export the rows of [--from, --to) of the dataset tables to a Parquet dataset."""
    from pathlib import Path

    from app.pipeline import recording

    dsn = _recording_database()
    try:
        begin, finish = recording.parse_time(start, "--from"), recording.parse_time(end, "--to")
    except recording.RecordingError as exc:
        raise RecordingRefused(str(exc)) from None
    manifest = _run_recording(recording.export_range(dsn, begin, finish, instruments, Path(out_dir)))
    rows = ", ".join(f"{table} {entry['rows']}" for table, entry in manifest["tables"].items())
    click.echo(f"exported {out_dir}: {rows}")


@record.command("import")
@click.argument("dataset", type=click.Path(path_type=str))
def record_import(dataset: str) -> None:
    """Import a Parquet dataset into the migrated database (rows already there are skipped)."""
    from pathlib import Path

    from app.pipeline import recording

    reports = _run_recording(recording.import_dataset(_recording_database(), Path(dataset)))
    click.echo(f"imported {dataset}: {recording.describe(reports)} rows")



# -- cryptics backtest ----------------------------------------------------------------------------


def _moment(text: str) -> float:
    """An ISO 8601 time (UTC when it names no zone) as unix seconds."""
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2026-12-03T10:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@main.command(context_settings={"allow_interspersed_args": True})
@click.option("--from", "start", help="Start of the recorded range (ISO 8601, UTC by default); with the database.")
@click.option("--to", "end", help="End of the range (exclusive); with the database.")
@click.option("--instrument", help="Instrument to replay (default: the first of CRYPTICS_INSTRUMENTS).")
@click.option("--dataset", type=click.Path(file_okay=False, path_type=str),
              help="A Parquet dataset directory instead of the database (CRYPTICS_DATABASE_URL).")
@click.option("--queue-model", type=click.Choice(["conservative", "probabilistic"]), default="conservative",
              show_default=True, help="How our orders advance in the queue (app/backtest/matching.py).")
@click.option("--latency", "latency_spec", default="constant", show_default=True,
              help="constant, constant:FEED_MS,ORDER_MS, or recorded (D9 samples of the range, from the database).")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2",
              help="A parameter axis of a sweep (repeat it, or list more NAME=V1,V2 after it).")
@click.option("--workers", type=int, default=None, help="Processes of a sweep (default: every core).")
@click.option("--dask-scheduler", default=None, help="Run the sweep on this dask.distributed scheduler.")
@click.option("--gap-threshold", type=float, default=5.0, show_default=True,
              help="Seconds without market data reported as a gap in the recording.")
@click.option("--orders-from-recording", "fidelity", is_flag=True,
              help="The fidelity check: no strategy; the orders the recorded live session sent, replayed against "
                   "every queue model, fills compared with the live ones (table on stdout, fidelity.json).")
@click.option("--tolerance", type=float, default=1.0, show_default=True,
              help="With --orders-from-recording: seconds within which a replayed fill reproduces a live one.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default="backtest-report",
              show_default=True, help="Directory for report.json and report.html (or sweep.json, fidelity.json).")
@click.argument("more_grid", nargs=-1, metavar="[NAME=V1,V2]...")
def backtest(start, end, instrument, dataset, queue_model, latency_spec, grid, workers, dask_scheduler,
             gap_threshold, fidelity, tolerance, out_dir, more_grid) -> None:
    """Replay a recorded range through the live strategy code (CRYPTICS_QUOTE_*, CRYPTICS_RISK_*,
    CRYPTICS_GATEWAY_* as for the worker) against an in-process matching model; write a report.

    With --orders-from-recording, the fidelity check instead (app/backtest/fidelity.py): the
    range's own orders replayed as sent, against the market without them.

    Exit code 2 with one line on bad input: no data in the range, an unknown instrument, a
    Parquet file of the wrong shape, an unknown grid parameter.
    """
    import dataclasses
    import json
    from pathlib import Path

    from app.analytics.positions import FeeSchedule
    from app.backtest import data as backtest_data
    from app.backtest import report as backtest_report
    from app.backtest import run as backtest_run
    from app.backtest.latency import RecordedLatency, parse_latency

    settings = _settings()

    def refuse(message: str):
        click.echo(f"cryptics backtest: {message}", err=True)
        sys.exit(2)

    if more_grid and not grid:
        refuse(f"unexpected argument {more_grid[0]!r} (grid axes follow --grid)")
    if fidelity and (grid or latency_spec != "constant"):
        refuse("--orders-from-recording replays the recorded orders at their recorded times: no --grid, no --latency")
    try:
        points = backtest_run.parse_grid(list(grid) + list(more_grid)) if grid else []
        latency = parse_latency(latency_spec)
    except ValueError as exc:
        refuse(str(exc))
    instrument = instrument or settings.instrument_names[0]
    try:
        if dataset:
            market = backtest_data.load_parquet(Path(dataset), instrument,
                                                _moment(start) if start else None, _moment(end) if end else None,
                                                gap_threshold)
        else:
            if not (start and end):
                refuse("--from and --to are required with the database (or give --dataset DIR)")
            if not settings.database_url:
                refuse("no database: set CRYPTICS_DATABASE_URL, or give --dataset DIR")
            market = asyncio.run(backtest_data.load_postgres(settings.database_dsn, instrument, _moment(start),
                                                             _moment(end), gap_threshold))
        if latency == "recorded":
            if dataset or not settings.database_url:
                refuse("--latency recorded reads the D9 samples from the database (CRYPTICS_DATABASE_URL)")
            samples = asyncio.run(backtest_data.load_latency_samples(settings.database_dsn, instrument,
                                                                     market.start, market.end))
            try:
                latency = RecordedLatency(samples["feed"], samples["order"])
            except ValueError as exc:
                refuse(str(exc))
    except backtest_data.DataError as exc:
        refuse(str(exc))
    for a, b in market.gaps:
        click.echo(f"cryptics backtest: gap in the recording: no market data for {b - a:.1f} s from "
                   f"{backtest_report.iso(a)} (not filled in)", err=True)
    if market.book_depth == "top":
        click.echo("cryptics backtest: no book_updates table/file: replaying book_tops, top of book only", err=True)
    if fidelity:
        _fidelity(settings, market, dataset, tolerance, Path(out_dir), refuse)
        return
    config = backtest_run.Backtest(quote=settings.quote, risk=settings.risk, gateway=settings.gateway,
                                   trading_state=settings.trading_state, queue_model=queue_model, latency=latency,
                                   fees=FeeSchedule(settings.analytics.maker_fee_rate, settings.analytics.taker_fee_rate))
    meta = {"from": backtest_report.iso(market.start), "to": backtest_report.iso(market.end),
            "instrument": instrument, "source": market.source, "queue_model": queue_model,
            "latency": latency.name, "events": market.counts(),
            "parameters": {"quote": _plain(dataclasses.asdict(settings.quote)),
                           "risk": dataclasses.asdict(settings.risk)}}
    out = Path(out_dir)
    for point in points or [{}]:
        try:
            point_config = config.with_overrides(point)
        except ValueError as exc:
            refuse(f"grid point {point}: {exc}")
        if point_config.gateway.mass_quote:
            refuse("the backtest replays the order mode only: unset CRYPTICS_GATEWAY_MASS_QUOTE")
    if not points:
        result = backtest_run.run_one(market, config)
        document = backtest_report.write(result, out, meta)
        click.echo(json.dumps(document["summary"]))
        click.echo(f"cryptics backtest: {out / 'report.json'}, {out / 'report.html'}", err=True)
        return
    if dask_scheduler:
        from dask.distributed import Client

        with Client(dask_scheduler) as client:
            rows = backtest_run.run_grid_dask(market, config, points, client)
    else:
        rows = backtest_run.run_grid(market, config, points, workers)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(backtest_report.strict_json({"meta": meta, "rows": rows}), indent=1))
    click.echo(_sweep_table(rows))


def _fidelity(settings, market, dataset, tolerance: float, out, refuse) -> None:
    """`cryptics backtest --orders-from-recording`: the check, its table and fidelity.json."""
    import json
    from pathlib import Path

    from app.backtest import fidelity
    from app.backtest.data import DataError
    from app.backtest.report import strict_json

    name = market.instrument.name
    try:
        if dataset:
            session = fidelity.load_session_parquet(Path(dataset), name, market.start, market.end)
        else:
            session = asyncio.run(fidelity.load_session_postgres(settings.database_dsn, name, market.start,
                                                                 market.end))
        report = fidelity.check(market, session, tolerance_s=tolerance)
    except DataError as exc:
        refuse(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(strict_json(report.to_json()), indent=1))
    click.echo(fidelity.table(report))
    click.echo(f"cryptics backtest: {out / 'fidelity.json'}", err=True)


def _plain(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _sweep_table(rows: list[dict]) -> str:
    """One line per grid point: its parameters and the summary's main figures."""
    names = list(rows[0]["parameters"]) if rows else []
    columns = names + ["net_pnl", "sharpe_1min", "max_drawdown", "fills", "volume", "uptime"]
    lines = ["  ".join(f"{c:>14}" for c in columns)]
    for row in rows:
        cells = [row["parameters"][n] for n in names] + [row[c] for c in columns[len(names):]]
        lines.append("  ".join(f"{c:>14.6g}" if isinstance(c, float) else f"{str(c):>14}" for c in cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main(prog_name="cryptics")
