"""``cryptics worker``: the Faust worker with every agent of agents/ registered."""
from __future__ import annotations

import asyncio
import importlib
import pkgutil

import uvloop

from app.pipeline import topics
from app.settings import Settings
from app.web.auth import is_loopback


def import_agents() -> None:
    """Import every module of agents/, which registers its agents and tables on the app."""
    import agents

    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"agents.{module.name}")


def run(settings: Settings) -> None:
    if not settings.broker_url:
        raise SystemExit(
            "cryptics worker needs CRYPTICS_BROKER_URL (and CRYPTICS_SCHEMA_REGISTRY_URL); "
            "`cryptics up` starts an embedded stack and sets them for you."
        )
    if not settings.schema_registry_url:
        raise SystemExit("cryptics worker needs CRYPTICS_SCHEMA_REGISTRY_URL (every topic is Avro).")
    if not settings.web_token and not is_loopback(settings.web_host):
        raise SystemExit(
            f"cryptics worker: CRYPTICS_WEB_HOST is {settings.web_host!r}, reachable from other machines, and there is "
            "no CRYPTICS_WEB_TOKEN: anyone reaching the port could switch trading. Set CRYPTICS_WEB_TOKEN (a long "
            "random string), or keep the web host on loopback."
        )
    # Topics before the worker (docs/architecture.md#d3-kafka-topics): idempotent, so harmless when `up` did it already.
    try:
        asyncio.run(topics.ensure_topics(
            settings.broker_url, topics.PIPELINE_TOPICS, settings.topic_partitions, settings.topic_replication
        ))
    except topics.TopicError as exc:
        raise SystemExit(f"cryptics worker: {exc}") from None
    import faust

    from app.faust_app import app

    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)

    import_agents()
    # uvloop: the venue's messages reach the hot path sooner (docs/architecture.md#d1-the-hot-path-stays-in-one-process; bench_quoting's floor
    # answered in p50 525 µs instead of 654 with uvloop in the client alone).
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=True, loop=loop)
    worker.execute_from_commandline()
