"""``cryptics worker``: the Faust worker with every agent of agents/ registered."""
from __future__ import annotations

import asyncio
import importlib
import pkgutil

from . import topics
from .settings import Settings


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
    # Topics before the worker (design D3): idempotent, so harmless when `up` did it already.
    asyncio.run(topics.ensure_topics(
        settings.broker_url, topics.PIPELINE_TOPICS, settings.topic_partitions, settings.topic_replication
    ))
    import faust

    from .faust_app import app

    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)

    import_agents()
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=True)
    worker.execute_from_commandline()
