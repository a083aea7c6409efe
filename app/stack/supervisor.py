"""``cryptics up``: start the embedded stack plus the workers, keep it running, stop it all in order.

Order of start: broker → PostgreSQL → migrations → topics → schema registry →
simulated venue → quoting worker → analytics worker. Each step waits until its service
answers (not just until its process exists) and prints how long it took. Any service given
by URL in the settings is used as it is, neither started nor watched.

While it runs, every child is supervised (docs/operations.md#supervision):

- A child that exits is started again, on the same port and with the same settings, after a
  backoff (app/stack/restarts.py): one line says what exited, its code or signal, the restart
  number and the delay; ``up.json`` counts the restarts. The other children keep running.
- The broker's death takes the workers with it: they are stopped, the broker started again,
  the topics created again (Tansu keeps them in memory), then the workers started again in
  order. What the broker held and PostgreSQL did not is lost; the supervisor says how much,
  from the offsets it polls while the broker lives (app/stack/unpersisted.py). The registry
  and the venue keep running: the registry's schemas are in PostgreSQL, not in a topic.
- PostgreSQL's death: it is started again on its data folder (nothing committed is lost) and
  the migrations are run again (idempotent). Everything else keeps running: the sinks retry
  until the database answers, the quoting lease is taken again, the registry's pool
  reconnects.
- A crash loop (``RestartPolicy.crash_loop_exits`` exits of one child within
  ``crash_loop_window`` seconds) stops the whole stack with a message naming the child and
  its last exit codes, and ``up`` exits with code 1.

On Ctrl-C or SIGTERM the children are stopped in reverse order and ``up`` exits 0; a child
that does not stop in time is killed. Children also carry a parent-death signal, so even
``kill -9`` of ``up`` leaves no process behind.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping, Optional, Protocol, Sequence

import aiohttp
import asyncpg
from aiokafka.errors import KafkaError

from app.config import without_password
from app.pipeline import topics
from app.security import registry_basic_auth
from app.settings import Settings
from app.stack import migrate
from app.stack.broker import EmbeddedBroker
from app.stack.postgres import EmbeddedPostgres
from app.stack.process import Child, StartupError, environ_for_child, free_port, spawn, stop_together, wait_until
from app.stack.restarts import Exit, ExitHistory, RestartPolicy, Verdict, describe_exit
from app.stack.unpersisted import UnpersistedWatch
from app.web.auth import ensure_token_file

#: Seconds between two looks at the children.
WATCH_INTERVAL = 0.5
#: Seconds a worker gets to stop when the broker died under it. Its SIGTERM handling waits for
#: the broker and would not end, and there is nothing left for it to flush to: it is killed after.
DEPENDENT_STOP_GRACE = 5.0

#: The ``state`` of a service in up.json.
RUNNING, STARTING, BACKOFF, STOPPED = "running", "starting", "backoff", "stopped"


class Launcher(Protocol):
    """Starts one service and waits until it answers; ``child`` is its latest process (also
    after a failed start, so that its exit code can be read)."""

    child: Optional[Child]

    async def start(self) -> float: ...


class SpawnedService:
    """A ``python -m app.cli ...`` child, started again with the same command and environment."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path,
                 healthy: Callable[[], Awaitable[bool]], *, what: str, timeout: float, interval: float = 0.05) -> None:
        self.name, self.argv, self.env, self.log_path, self.cwd = name, list(argv), dict(env), log_path, cwd
        self.healthy, self.what, self.timeout, self.interval = healthy, what, timeout, interval
        self.child: Optional[Child] = None

    async def start(self) -> float:
        self.child = spawn(self.name, self.argv, log_path=self.log_path, env=self.env, cwd=self.cwd)
        try:
            return await wait_until(self.healthy, what=self.what, timeout=self.timeout, child=self.child,
                                    interval=self.interval)
        except BaseException:
            self.child.stop(timeout=5)  # never leave a half-started child behind
            raise


@dataclass
class Service:
    """One supervised child: how to start it, its latest process, and its record."""

    name: str
    launcher: Launcher
    #: What the start line shows after the time taken (a URL, a folder).
    detail: str
    history: ExitHistory
    #: Services this one's death takes down, started again once it is back (in start order).
    dependents: tuple[str, ...] = ()
    state: str = STARTING
    restarts: int = 0
    last_exit: Optional[int] = None
    #: monotonic and wall-clock time of the latest healthy start.
    up_since: float = 0.0
    up_since_wall: Optional[float] = None
    #: Why the supervisor stopped it (a dependency restarted): its next start is no exit of its own.
    stopped_for: Optional[str] = None

    @property
    def child(self) -> Optional[Child]:
        return self.launcher.child

    def exited(self) -> bool:
        """It was running (or starting) and its process is gone, without the supervisor asking."""
        return self.state in (RUNNING, STARTING) and self.child is not None and not self.child.alive()

    def as_json(self) -> dict:
        child = self.child
        return {
            "pid": child.pid if child else None, "state": self.state, "restarts": self.restarts,
            "last_exit": self.last_exit, "last_exit_text": describe_exit(self.last_exit) if self.last_exit is not None
            else None, "up_since": self.up_since_wall, "stopped_for": self.stopped_for,
            "log": str(child.log_path.resolve()) if child else None,
        }


class CrashLoop(Exception):
    """A child exited too often: the stack stops."""

    def __init__(self, service: Service, verdict: Verdict, policy: RestartPolicy) -> None:
        codes = ", ".join(describe_exit(e.code) for e in verdict.recent)
        super().__init__(
            f"{service.name} exited {len(verdict.recent)} times within {policy.crash_loop_window:.0f} s "
            f"(last exit codes: {codes}): a crash loop; stopping the stack")
        self.service = service


@dataclass
class RunningStack:
    settings: Settings
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    services: list[Service] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    watch: Optional[UnpersistedWatch] = None
    #: What each broker death lost (LossReport.as_json), oldest first.
    broker_losses: list[dict] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    #: Called after every change of a service's state (write_state, once `up` is healthy).
    on_change: Callable[[], None] = lambda: None

    @property
    def children(self) -> list[Child]:
        return [s.child for s in self.services if s.child is not None]

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def add(self, name: str, launcher: Launcher, detail: str, dependents: tuple[str, ...] = ()) -> Service:
        service = Service(name, launcher, detail, ExitHistory(self.policy), dependents=dependents)
        self.services.append(service)
        return service

    def stop(self, say: Callable[[str], None]) -> None:
        """Stop the children in reverse start order: the analytics worker first, the broker last."""
        for service in reversed(self.services):
            child = service.child
            if child is None:
                continue
            say(f"stopping {service.name}")
            child.stop(timeout=30)
            service.state = STOPPED

    def exited_before(self, service: Service) -> Optional[Service]:
        """The first service started before ``service`` whose process exited, if any."""
        for earlier in self.services[:self.services.index(service)]:
            if earlier.exited():
                return earlier
        return None

    def needing_attention(self) -> Optional[Service]:
        """The first service, in start order, that exited or waits to be started again. In start
        order, so that the broker and PostgreSQL come before what depends on them."""
        return next((s for s in self.services if s.exited() or s.state == STOPPED), None)


def _say(message: str) -> None:
    print(f"[cryptics] {message}", flush=True)


async def _http_ok(url: str, predicate: Callable[[object], bool] = lambda _: True,
                   auth: Optional[tuple[str, str]] = None) -> bool:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                     auth=aiohttp.BasicAuth(*auth) if auth else None) as session:
        async with session.get(url) as response:
            if response.status != 200:
                return False
            return predicate(await response.json(content_type=None))


async def _heartbeat_seen(url: str, workers: list[str]) -> bool:
    """True once a heartbeat of the worker at ``url`` has been counted by one of ``workers``: its
    heartbeats went round the broker. (Not necessarily by itself: the workers share the
    heartbeat topic's partitions, and its own key may be another worker's.)"""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        async with session.get(f"{url}/heartbeat/") as response:
            if response.status != 200:
                return False
            worker_id = (await response.json(content_type=None))["worker"]
        for other in workers:
            try:
                async with session.get(f"{other}/heartbeat/") as response:
                    if response.status == 200 and (await response.json(content_type=None))["counts"].get(worker_id):
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue  # that worker is not up (yet, or any more): ask the others
    return False


def _python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _started(say: Callable[[str], None], service: Service, took: float) -> None:
    again = f" (restart {service.restarts})" if service.restarts else ""
    say(f"{service.name:11} healthy in {took:5.2f} s  {service.detail}{again}")


async def _launch(service: Service, say: Callable[[str], None]) -> None:
    """Start a service for the first time; a failure stops the start-up."""
    took = await service.launcher.start()
    service.state, service.up_since, service.up_since_wall = RUNNING, time.monotonic(), time.time()
    _started(say, service, took)


async def _migrate(settings: Settings, say: Callable[[str], None]) -> None:
    report = await migrate.migrate(settings.database_dsn)
    say(f"migrations  applied {list(report.applied)}, already {list(report.already)}"
        + (f", TimescaleDB-only skipped {list(report.skipped_timescaledb)} (no extension)"
           if report.skipped_timescaledb else ""))


async def _create_topics(settings: Settings, say: Callable[[str], None]) -> None:
    report = await topics.ensure_topics(
        settings.broker_url, topics.PIPELINE_TOPICS, settings.topic_partitions, settings.topic_replication
    )
    say(f"topics      created {len(report.created)}, existing {len(report.existing)}")


def _unpersisted_watch(settings: Settings) -> UnpersistedWatch:
    from app.pipeline.sink import SPECS
    from models.registry import RECORDS

    return UnpersistedWatch(
        topics.bootstrap_servers(settings.broker_url), f"{settings.app_id}-persistence",
        persisted_topics=[RECORDS[name].topic for name in SPECS], dead_letter_topic=RECORDS["dead_letter"].topic,
        changelog_prefix=f"{settings.app_id}-",
    )


def embedded_conflicts(settings: Settings) -> list[str]:
    """A line for each secured-connection setting the embedded service it would apply to cannot
    honour: the embedded broker speaks PLAINTEXT only, the embedded PostgreSQL has no TLS. Such
    a setting is for an external service (its URL set); basic auth of the embedded registry
    works (docs/operations.md#secured-connections)."""
    lines = []
    if settings.broker_url is None and settings.kafka_security_protocol != "PLAINTEXT":
        lines.append(f"CRYPTICS_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs CRYPTICS_BROKER_URL: "
                     "the embedded broker speaks PLAINTEXT only")
    if settings.database_url is None and settings.database_sslmode in ("require", "verify-ca", "verify-full"):
        lines.append(f"CRYPTICS_DATABASE_SSLMODE={settings.database_sslmode} needs CRYPTICS_DATABASE_URL: "
                     "the embedded PostgreSQL has no TLS")
    return lines


async def start(settings: Settings, say: Callable[[str], None] = _say,
                policy: Optional[RestartPolicy] = None) -> RunningStack:
    """Start every service that is not external; return once all are healthy."""
    stack = RunningStack(settings, policy or RestartPolicy())
    logs = settings.state_dir / "logs"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    project_root = Path(__file__).resolve().parent.parent.parent
    try:
        if settings.broker_url is None:
            broker = EmbeddedBroker(logs)
            dependents = ("worker", "analytics") if settings.analytics.enabled else ("worker",)
            await _launch(stack.add("broker", broker, f"{broker.url} (Tansu, memory storage)", dependents), say)
            settings = settings.with_services(broker_url=broker.url)
            stack.watch = _unpersisted_watch(settings)
        else:
            say(f"broker      external      {without_password(settings.broker_url)}"
                f" ({settings.kafka_security_protocol})")

        pg: Optional[EmbeddedPostgres] = None
        if settings.database_url is None:
            pg = EmbeddedPostgres(settings.postgres_dir, logs)
            await _launch(stack.add("postgres", pg, f"data in {pg.data_dir}"), say)
            settings = settings.with_services(database_url=pg.dsn())
        else:
            say("postgres    external" + (f"      sslmode {settings.database_sslmode}" if settings.database_sslmode else ""))

        await _migrate(settings, say)
        await _create_topics(settings, say)

        if settings.schema_registry_url is None:
            port = settings.registry_port or free_port()
            url = f"http://127.0.0.1:{port}"
            # With CRYPTICS_SCHEMA_REGISTRY_USERNAME the registry asks for basic auth, and so
            # does its health check here (docs/operations.md#secured-connections).
            basic_auth = registry_basic_auth(settings)
            registry = SpawnedService(
                "registry", _python_module("registry", "--port", str(port)),
                environ_for_child(settings.to_env()), logs / "registry.log", project_root,
                lambda: _http_ok(f"{url}/subjects", auth=basic_auth), what="schema registry", timeout=30)
            await _launch(stack.add("registry", registry, url + (" (basic auth)" if basic_auth else "")), say)
            settings = settings.with_services(schema_registry_url=url)
        else:
            say(f"registry    external      {without_password(settings.schema_registry_url)}")

        if settings.venue == "simulated" and settings.venue_url is None:
            settings = await _start_simulated_venue(stack, settings, logs, project_root, say)
        else:
            say(f"venue       {settings.venue:11} {settings.venue_ws_url}")

        if settings.web_token is None:
            token, token_path = ensure_token_file(settings.state_dir)
            settings = settings.with_services(web_token=token)
            say(f"web token   {token_path.resolve()}  (POST endpoints: Authorization: Bearer $(cat {token_path}))")
        else:
            say("web token   from CRYPTICS_WEB_TOKEN")

        # Two workers of one Faust app. The quoting worker holds the venue session, quotes and
        # persists; the analytics worker runs the analytics (and persists too: the sink's
        # partitions are shared). The analytics' Faust stream costs ~70 µs of event-loop time
        # per event, in bursts: in the quoting worker it held orders back by up to tens of ms
        # (docs/benchmarks.md, "Analytics (issue 13)"); in a process of its own it does not.
        web = f"http://{settings.web_host}:{settings.web_port}"
        analytics_web = f"http://{settings.web_host}:{free_port()}" if settings.analytics.enabled else None
        workers = [web] + ([analytics_web] if analytics_web else [])

        # A worker is healthy once one of the workers counted its heartbeat: it went round the
        # broker. Its own count is not enough once there are two: they share the heartbeat
        # topic's partitions, and a restarted worker may be given none of them.
        def healthy(url: str) -> Callable[[], Awaitable[bool]]:
            if settings.heartbeat_interval > 0:
                return lambda: _heartbeat_seen(url, workers)
            return lambda: _http_ok(f"{url}/heartbeat/")

        worker = SpawnedService(
            "worker", _python_module("worker"),
            environ_for_child({**settings.to_env(), "CRYPTICS_ANALYTICS_ENABLED": "false"}),
            logs / "worker.log", project_root, healthy(web), what="worker", timeout=90, interval=0.2)
        await _launch(stack.add("worker", worker, f"{web}/heartbeat/ (heartbeat went round the broker)"), say)

        # After the quoting worker is up, not beside it: two workers joining the group at once
        # kept the embedded broker's rebalances going past the start-up timeout.
        if analytics_web is not None:
            analytics_port = int(analytics_web.rsplit(":", 1)[1])
            analytics = SpawnedService(
                "analytics", _python_module("worker"),
                environ_for_child({
                    **settings.to_env(), "CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_WEB_PORT": str(analytics_port),
                    # No venue: this worker never competes for the quoting lease.
                    "CRYPTICS_VENUE_URL": "", "CRYPTICS_VENUE": "simulated",
                    "CRYPTICS_STATE_DIR": str(settings.state_dir / "analytics-worker"),
                }),
                logs / "analytics.log", project_root, healthy(analytics_web), what="analytics worker", timeout=90,
                interval=0.2)
            await _launch(stack.add("analytics", analytics, f"{analytics_web}/analytics/ (a worker of its own)"),
                          say)

        stack.settings = settings
        stack.urls = {
            "web": web,
            "analytics": analytics_web or "",
            "registry": without_password(settings.schema_registry_url or ""),
            "database": without_password(settings.database_url or ""),
            "broker": without_password(settings.broker_url or ""),
            "venue": settings.venue_ws_url or "",
            "logs": str(logs.resolve()),
        }
        if pg is not None:  # the password is in this file (mode 0600), never printed
            stack.urls["database_password_file"] = str(pg.password_file.resolve())
        return stack
    except BaseException:
        stack.stop(say)
        raise


#: Key id of the throwaway key pair `cryptics up` makes for the simulated venue.
SIMULATED_KEY_ID = "cryptics-simulated"


async def _start_simulated_venue(stack: RunningStack, settings: Settings, logs: Path, project_root: Path,
                                 say: Callable[[str], None]) -> Settings:
    """Start the simulated venue, with a throwaway key pair made on first run so the
    default run needs no credentials from the user."""
    from app.venue import create_keypair

    config = settings.simulated_venue
    key_dir = settings.state_dir / "venue"
    private_key = key_dir / f"{SIMULATED_KEY_ID}.private.pem"
    if settings.thalex_key_id is None:
        if not private_key.exists() or not (Path(config.trusted_keys_dir) / f"{SIMULATED_KEY_ID}.pem").exists():
            create_keypair(key_dir, SIMULATED_KEY_ID, config.trusted_keys_dir)
            say(f"venue       created a throwaway key pair in {key_dir}")
        settings = settings.with_services(thalex_key_id=SIMULATED_KEY_ID, thalex_private_key_file=private_key)
    port = config.port or free_port()
    url = f"ws://{config.host}:{port}/ws/api/v2"
    venue = SpawnedService(
        "venue", _python_module("venue"),
        environ_for_child({**settings.to_env(), "CRYPTICS_VENUE_PORT": str(port),
                           "CRYPTICS_VENUE_TRUSTED_KEYS_DIR": str(config.trusted_keys_dir)}),
        logs / "venue.log", project_root,
        lambda: _http_ok(f"http://{config.host}:{port}/venue/latency"), what="simulated venue", timeout=30)
    await _launch(stack.add("venue", venue, f"{url} (simulated, seed {config.seed})"), say)
    return settings.with_services(venue_url=url)


# -- supervision --------------------------------------------------------------------------------

#: What a restart can fail with: the child did not answer, or the step after it (topics on the
#: broker, migrations on PostgreSQL) failed because it went away again. Counted as an exit.
_RESTART_FAILURES = (StartupError, topics.TopicError, KafkaError, OSError, asyncpg.PostgresError,
                     asyncpg.InterfaceError)


class UpstreamExited(Exception):
    """A service started earlier (the broker, PostgreSQL) exited while this one was starting."""

    def __init__(self, upstream: Service) -> None:
        super().__init__(upstream.name)
        self.upstream = upstream


async def _start_unless_upstream_exits(stack: RunningStack, service: Service) -> float:
    """``service.launcher.start()``, given up (UpstreamExited) if a service before it in start
    order exits meanwhile: a worker cannot become healthy without its broker, and waiting the
    worker's whole start-up timeout would only delay the broker's own restart."""
    task = asyncio.ensure_future(service.launcher.start())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=WATCH_INTERVAL)
            upstream = stack.exited_before(service)
            if upstream is not None and not task.done():
                task.cancel()  # the launcher stops the half-started child
                await asyncio.gather(task, return_exceptions=True)
                raise UpstreamExited(upstream)
        return task.result()
    finally:
        if not task.done():  # we were cancelled ourselves (a stop signal)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _recover(stack: RunningStack, service: Service, say: Callable[[str], None]) -> None:
    """Start ``service`` again: after a backoff if it exited, at once if the supervisor stopped it
    for a dependency. Raises CrashLoop when it exits too often."""
    if service.exited():
        delay = _exit_verdict(stack, service, say)
        await _on_death(stack, service, say)
    else:
        say(f"{service.name} starting again ({service.stopped_for})")
        delay = 0.0
    while True:
        service.state = BACKOFF if delay else STARTING
        stack.on_change()
        await asyncio.sleep(delay)
        service.state, service.stopped_for = STARTING, None
        service.restarts += 1
        stack.on_change()
        try:
            took = await _start_unless_upstream_exits(stack, service)
            service.state, service.up_since, service.up_since_wall = RUNNING, time.monotonic(), time.time()
            _started(say, service, took)
            await _after_restart(stack, service, say)
            stack.on_change()
            return
        except UpstreamExited as exc:
            _wait_for_upstream(stack, service, exc.upstream, say)
            return
        except _RESTART_FAILURES as exc:
            child = service.child
            if child is not None and child.alive():
                child.stop(timeout=10)
            upstream = stack.exited_before(service)
            if upstream is not None:  # not its own fault: no exit of its own
                _wait_for_upstream(stack, service, upstream, say)
                return
            # The reason's first sentence: the log tail a StartupError carries is in the log anyway.
            why = (str(exc).splitlines() or [type(exc).__name__])[0].split(" Last lines of ")[0].rstrip(".")
            delay = _exit_verdict(stack, service, say, why=why)


def _wait_for_upstream(stack: RunningStack, service: Service, upstream: Service, say: Callable[[str], None]) -> None:
    service.state, service.stopped_for = STOPPED, f"the {upstream.name} exited while it started"
    say(f"{service.name}: the {upstream.name} exited while it started; it starts again after the {upstream.name}")
    stack.on_change()


def _exit_verdict(stack: RunningStack, service: Service, say: Callable[[str], None],
                  why: Optional[str] = None) -> float:
    """Count an exit of ``service`` (``why``: of a start that failed), say it in one line, and
    return the delay before its restart."""
    child = service.child
    code = child.popen.returncode if child is not None else None
    now = time.monotonic()
    uptime = now - service.up_since if service.state == RUNNING else 0.0
    service.last_exit = code
    verdict = service.history.record(Exit(now, code, uptime))
    if verdict.crash_loop:
        raise CrashLoop(service, verdict, stack.policy)
    where = f" (log: {child.log_path.resolve()})" if child is not None else ""
    what = f"did not come back ({why})" if why else f"exited with {describe_exit(code)}"
    say(f"{service.name} {what}; restart {service.restarts + 1} in {verdict.delay:.1f} s{where}")
    return verdict.delay


async def _on_death(stack: RunningStack, service: Service, say: Callable[[str], None]) -> None:
    """Before the restart of a service others depend on: say so, and stop what it takes down."""
    if service.name == "broker":
        if stack.watch is not None:
            await stack.watch.pause()
            report = stack.watch.loss_report()
            if report is None:
                say("lost with the broker: unknown (no poll of its offsets had succeeded yet)")
            else:
                stack.broker_losses.append(report.as_json())
                for line in report.lines():
                    say(line)
        say("the broker keeps topics in memory: they are created again, then the workers are started again")
    elif service.name == "postgres":
        say("postgres keeps its data on disk: nothing committed is lost; the other services keep running")
    dependents = [stack.service(name) for name in service.dependents]
    running = [d.child for d in dependents if d.child is not None and d.child.alive()]
    if running:
        say(f"stopping {', '.join(c.name for c in running)} (they run on the {service.name})")
        stop_together(running, DEPENDENT_STOP_GRACE)
    for dependent in dependents:
        dependent.state, dependent.stopped_for = STOPPED, f"the {service.name} restarted"
    stack.on_change()


async def _after_restart(stack: RunningStack, service: Service, say: Callable[[str], None]) -> None:
    if service.name == "broker":
        await _create_topics(stack.settings, say)
        if stack.watch is not None:
            stack.watch.resume()
    elif service.name == "postgres":
        await _migrate(stack.settings, say)


def _state(stack: RunningStack) -> dict:
    services = {s.name: s.as_json() for s in stack.services}
    state = {
        "pid": os.getpid(),
        "started_at": stack.started_at,
        "state": "up" if all(s["state"] == RUNNING for s in services.values()) else "recovering",
        # name → pid, the short form tools read.
        "children": {name: s["pid"] for name, s in services.items()},
        "services": services,
        "urls": stack.urls,
    }
    watch = stack.watch
    if watch is not None:
        snapshot = watch.snapshot
        state["unpersisted"] = {
            "as_of": snapshot.at if snapshot else None,
            "records": snapshot.unpersisted if snapshot else None,
            "oldest_seconds": round(snapshot.oldest_seconds, 3) if snapshot else None,
            "by_topic": {t: b.unpersisted for t, b in sorted(snapshot.persisted.items())} if snapshot else {},
            "most_records": watch.most_unpersisted, "longest_seconds": round(watch.longest_seconds, 3),
            "polls": watch.polls, "failed_polls": watch.failed_polls,
        }
        state["broker_losses"] = stack.broker_losses
    return state


def write_state(stack: RunningStack) -> Path:
    """``<state_dir>/up.json``: pids, states, restarts and URLs of the running stack, for
    ``cryptics status``, tools and tests. Written whole and renamed into place, so a reader
    never sees half a file."""
    path = stack.settings.state_dir / "up.json"
    partial = path.with_name("up.json.partial")
    partial.write_text(json.dumps(_state(stack), indent=2))
    os.replace(partial, path)
    return path


async def _keep_writing_state(stack: RunningStack, interval: float = 1.0) -> None:
    while True:
        await asyncio.sleep(interval)
        write_state(stack)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[None]) -> bool:
    """Run ``work`` unless a stop signal comes first (then cancel it); True if it finished."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        task.result()  # a CrashLoop goes on up
        return True
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return False


async def supervise(stack: RunningStack, stop: asyncio.Event, say: Callable[[str], None] = _say) -> int:
    """Watch the children until a stop signal (0) or a crash loop (1)."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), WATCH_INTERVAL)
            break
        except asyncio.TimeoutError:
            pass
        service = stack.needing_attention()
        if service is None:
            continue
        try:
            if not await _unless_stopped(stop, _recover(stack, service, say)):
                break
        except CrashLoop as exc:
            child = exc.service.child
            say(str(exc) + (f". Last lines of {child.log_path}:\n{child.log_tail()}" if child else ""))
            return 1
    return 0


async def run(settings: Settings, say: Callable[[str], None] = _say, policy: Optional[RestartPolicy] = None) -> int:
    """Start everything, supervise it until a stop signal or a crash loop, stop everything."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started = time.monotonic()
    say(f"starting the embedded stack (state in {settings.state_dir.resolve()})")
    try:
        stack = await start(settings, say, policy)
    except (StartupError, topics.TopicError) as exc:
        say(f"start-up failed: {exc}")
        return 1
    say(f"healthy in {time.monotonic() - started:.2f} s")
    for name, url in stack.urls.items():
        say(f"  {name:9} {url}")
    state = write_state(stack)
    stack.on_change = lambda: write_state(stack)
    say(f"pids in {state}; `cryptics status` shows them; Ctrl-C stops everything")

    # Beside the supervision, which may be busy with a restart for a while: the offsets the
    # loss report needs, and up.json kept current (a restarted child's pid, the figures).
    helpers = [asyncio.ensure_future(_keep_writing_state(stack))]
    if stack.watch is not None:
        helpers.append(asyncio.ensure_future(stack.watch.run()))
    try:
        exit_code = await supervise(stack, stop, say)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        stack.on_change = lambda: None
        stack.stop(say)
        state.unlink(missing_ok=True)
    restarts = {s.name: s.restarts for s in stack.services if s.restarts}
    say("stopped" + (f" (restarts: {', '.join(f'{n} {k}' for n, k in restarts.items())})" if restarts else ""))
    return exit_code
