"""``cryptics up``: start the embedded stack plus the worker, stop it all in order.

Order of start: broker → PostgreSQL → migrations → topics → schema registry →
simulated venue → worker. Each step waits until its service answers (not just until its process
exists) and prints how long it took. Any service given by URL in the settings
is used as it is and not started.

On Ctrl-C, SIGTERM, or the death of any child, the children are stopped in
reverse order and ``up`` exits; a child that does not stop in time is killed.
Children also carry a parent-death signal, so even ``kill -9`` of ``up`` leaves
no process behind.
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
from typing import Callable, Optional

import aiohttp

from app.config import without_password
from app.pipeline import topics
from app.settings import Settings
from app.stack import migrate
from app.stack.broker import EmbeddedBroker
from app.stack.postgres import EmbeddedPostgres
from app.stack.process import Child, StartupError, environ_for_child, free_port, spawn, wait_until
from app.web.auth import ensure_token_file


@dataclass
class RunningStack:
    settings: Settings
    children: list[Child] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def stop(self, say: Callable[[str], None]) -> None:
        """Stop the children in reverse start order: the worker first, the broker last."""
        for child in reversed(self.children):
            say(f"stopping {child.name}")
            child.stop(timeout=30)

    def dead_child(self) -> Optional[Child]:
        return next((c for c in self.children if not c.alive()), None)


def _say(message: str) -> None:
    print(f"[cryptics] {message}", flush=True)


async def _http_ok(url: str, predicate: Callable[[object], bool] = lambda _: True) -> bool:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
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
            async with session.get(f"{other}/heartbeat/") as response:
                if response.status == 200 and (await response.json(content_type=None))["counts"].get(worker_id):
                    return True
    return False


def _python_module(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


async def start(settings: Settings, say: Callable[[str], None] = _say) -> RunningStack:
    """Start every service that is not external; return once all are healthy."""
    stack = RunningStack(settings)
    logs = settings.state_dir / "logs"
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    project_root = Path(__file__).resolve().parent.parent.parent
    try:
        if settings.broker_url is None:
            broker = EmbeddedBroker(logs)
            took = await broker.start()
            stack.children.append(broker.child)
            settings = settings.with_services(broker_url=broker.url)
            say(f"broker      healthy in {took:5.2f} s  {broker.url} (Tansu, memory storage)")
        else:
            say(f"broker      external      {settings.broker_url}")

        pg: Optional[EmbeddedPostgres] = None
        if settings.database_url is None:
            pg = EmbeddedPostgres(settings.postgres_dir, logs)
            took = await pg.start()
            stack.children.append(pg.child)
            settings = settings.with_services(database_url=pg.dsn())
            say(f"postgres    healthy in {took:5.2f} s  data in {pg.data_dir}")
        else:
            say("postgres    external")

        report = await migrate.migrate(settings.database_url)
        say(f"migrations  applied {list(report.applied)}, already {list(report.already)}"
            + (f", TimescaleDB-only skipped {list(report.skipped_timescaledb)} (no extension)"
               if report.skipped_timescaledb else ""))

        topic_report = await topics.ensure_topics(
            settings.broker_url, topics.PIPELINE_TOPICS, settings.topic_partitions, settings.topic_replication
        )
        say(f"topics      created {len(topic_report.created)}, existing {len(topic_report.existing)}")

        if settings.schema_registry_url is None:
            port = settings.registry_port or free_port()
            registry = spawn(
                "registry", _python_module("registry", "--port", str(port)),
                log_path=logs / "registry.log", env=environ_for_child(settings.to_env()), cwd=project_root,
            )
            stack.children.append(registry)
            url = f"http://127.0.0.1:{port}"
            took = await wait_until(lambda: _http_ok(f"{url}/subjects"), what="schema registry",
                                    timeout=30, child=registry)
            settings = settings.with_services(schema_registry_url=url)
            say(f"registry    healthy in {took:5.2f} s  {url}")
        else:
            say(f"registry    external      {settings.schema_registry_url}")

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
        check = (lambda body: body.get("own_round_trip_ms") is not None) if settings.heartbeat_interval > 0 \
            else (lambda body: True)
        worker = spawn(
            "worker", _python_module("worker"),
            log_path=logs / "worker.log", cwd=project_root,
            env=environ_for_child({**settings.to_env(), "CRYPTICS_ANALYTICS_ENABLED": "false"}),
        )
        stack.children.append(worker)
        web = f"http://{settings.web_host}:{settings.web_port}"
        took = await wait_until(lambda: _http_ok(f"{web}/heartbeat/", check), what="worker",
                                timeout=90, child=worker, interval=0.2)
        say(f"worker      healthy in {took:5.2f} s  {web}/heartbeat/ (heartbeat went round the broker)")

        # After the quoting worker is up, not beside it: two workers joining the group at once
        # kept the embedded broker's rebalances going past the start-up timeout.
        analytics_web = None
        if settings.analytics.enabled:
            analytics_port = free_port()
            analytics = spawn(
                "analytics", _python_module("worker"),
                log_path=logs / "analytics.log", cwd=project_root,
                env=environ_for_child({
                    **settings.to_env(), "CRYPTICS_ANALYTICS_ENABLED": "true", "CRYPTICS_WEB_PORT": str(analytics_port),
                    # No venue: this worker never competes for the quoting lease.
                    "CRYPTICS_VENUE_URL": "", "CRYPTICS_VENUE": "simulated",
                    "CRYPTICS_STATE_DIR": str(settings.state_dir / "analytics-worker"),
                }),
            )
            stack.children.append(analytics)
            analytics_web = f"http://{settings.web_host}:{analytics_port}"
            seen = (lambda: _heartbeat_seen(analytics_web, [web, analytics_web])) if settings.heartbeat_interval > 0 \
                else (lambda: _http_ok(f"{analytics_web}/heartbeat/"))
            took = await wait_until(seen, what="analytics worker", timeout=90, child=analytics, interval=0.2)
            say(f"analytics   healthy in {took:5.2f} s  {analytics_web}/analytics/ (a worker of its own)")

        stack.settings = settings
        stack.urls = {
            "web": web,
            "analytics": analytics_web or "",
            "registry": settings.schema_registry_url or "",
            "database": without_password(settings.database_url or ""),
            "broker": settings.broker_url or "",
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
    child = spawn(
        "venue", _python_module("venue"), log_path=logs / "venue.log",
        env=environ_for_child({**settings.to_env(), "CRYPTICS_VENUE_PORT": str(port),
                               "CRYPTICS_VENUE_TRUSTED_KEYS_DIR": str(config.trusted_keys_dir)}),
        cwd=project_root,
    )
    stack.children.append(child)
    url = f"ws://{config.host}:{port}/ws/api/v2"
    took = await wait_until(lambda: _http_ok(f"http://{config.host}:{port}/venue/latency"),
                            what="simulated venue", timeout=30, child=child)
    say(f"venue       healthy in {took:5.2f} s  {url} (simulated, seed {config.seed})")
    return settings.with_services(venue_url=url)


def write_state(stack: RunningStack) -> Path:
    """``<state_dir>/up.json``: the pids and URLs of the running stack, for tools and tests."""
    path = stack.settings.state_dir / "up.json"
    path.write_text(json.dumps({
        "pid": os.getpid(),
        "children": {c.name: c.pid for c in stack.children},
        "urls": stack.urls,
    }, indent=2))
    return path


async def run(settings: Settings, say: Callable[[str], None] = _say) -> int:
    """Start everything, wait for a stop signal or a dead child, stop everything."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started = time.monotonic()
    say(f"starting the embedded stack (state in {settings.state_dir.resolve()})")
    try:
        stack = await start(settings, say)
    except (StartupError, topics.TopicError) as exc:
        say(f"start-up failed: {exc}")
        return 1
    say(f"healthy in {time.monotonic() - started:.2f} s")
    for name, url in stack.urls.items():
        say(f"  {name:9} {url}")
    state = write_state(stack)
    say(f"pids in {state}; Ctrl-C stops everything")

    exit_code = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            dead = stack.dead_child()
            if dead is not None:
                say(f"{dead.name} exited with code {dead.popen.returncode}; stopping the stack. "
                    f"Last lines of {dead.log_path}:\n{dead.log_tail()}")
                exit_code = 1
                break
    stack.stop(say)
    state.unlink(missing_ok=True)
    say("stopped")
    return exit_code
