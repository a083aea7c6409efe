"""The analytics tables checked against their inputs: every table recomputed from scratch over
the input topics, and compared with what its changelog topic holds.

For tests and the fault campaign (benchmarks/fault_campaign.py): read back after a run, with
the workers stopped or idle, since a changelog still being written is a moving target.
``recompute`` applies each input record once, in the order it was produced, through the
analytics agents' own engine (app/analytics/engine.py); ``differences`` compares two values
with a float tolerance, as sums may add up in another order.
"""
from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from typing import Any, Mapping, Optional

from app.analytics.config import AnalyticsConfig
from app.analytics.engine import INPUTS, TABLES, AnalyticsEngine, Event, local_tables
from app.pipeline.codec import AvroCodec, WireFormatError
from app.pipeline.topics import read_until_quiet
from models import schemas
from models.registry import record

def activity(analytics: Optional[Mapping[str, Any]], sink: Optional[Mapping[str, Any]]) -> Optional[tuple[int, int]]:
    """A worker's progress from its ``GET /analytics/`` and ``GET /sink/`` answers: (events the
    analytics took, records the sink wrote), for comparing polls until they stand still. None
    while it cannot be idle: a view did not answer, or an input partition waits for a hole (its
    events are held, not applied, until the hole closes or is given up)."""
    if analytics is None or sink is None:
        return None
    counters = analytics["counters"]
    if any(counters["partitions_waiting"].values()):
        return None
    return counters["events"], sink["totals"]["records"]


#: The windowed tables: their changelog keys are [key, [start, end]].
WINDOWED = {spec.name for spec in TABLES if spec.window is not None}


class Topics:
    """The input topics and the changelogs of the Faust app ``app_id``, read back from Kafka and decoded."""

    def __init__(self, bootstrap: str, registry_url: str, app_id: str = "cryptics") -> None:
        self.bootstrap, self.registry_url, self.app_id = bootstrap, registry_url, app_id

    async def inputs(self) -> list[tuple[float, int, str, int, int, dict]]:
        """Every decodable input record: (Kafka timestamp, topic order, name, partition, offset, value)."""
        out = []
        for order, name in enumerate(INPUTS):
            r = record(name)
            codec = AvroCodec(r.subject, r.schema, self.registry_url)
            for m in await read_until_quiet(self.bootstrap, r.topic):
                try:
                    value = codec.loads(m.value)
                except WireFormatError:
                    continue  # poison: the engine never sees it either
                out.append((m.timestamp, order, name, m.partition, m.offset, value))
        return out

    async def changelog(self, table: str, state: str) -> tuple[dict, dict]:
        """The table as its changelog leaves it (last value per key), and each key's partitions."""
        topic = f"{self.app_id}-{table}-changelog"
        codec = AvroCodec(f"{topic}-value", schemas.load(state), self.registry_url)
        values: dict = {}
        partitions: dict = defaultdict(set)
        for m in await read_until_quiet(self.bootstrap, topic):
            key = changelog_key(table, m.key)
            partitions[key].add(m.partition)
            if m.value is None:
                values.pop(key, None)
            else:
                values[key] = codec.loads(m.value)
        return values, partitions


def changelog_key(table: str, raw: bytes) -> Any:
    if table not in WINDOWED:
        return raw.decode()
    key, (start, end) = json.loads(raw)
    return key, (start, end)


def recompute(inputs: list, instruments: tuple[str, ...]) -> tuple[dict, list]:
    """Every table from scratch, each input record (Topics.inputs) applied once, in the order a
    consumer of every input partition would read them; and what the engine published meanwhile."""
    tables = local_tables()
    published: list = []
    engine = AnalyticsEngine(instruments, AnalyticsConfig(), tables,
                             publish=lambda name, key, value: published.append((name, key, value)),
                             refuse=lambda event, reason, error: None)
    # Each partition in offset order, as a consumer reads it (the skip of a redelivery compares
    # offsets); the partitions merged by Kafka timestamp. Timestamps alone do not do: two
    # producers' records can sit on one partition with their create times out of offset order.
    partitions: dict[tuple[str, int], list] = defaultdict(list)
    for r in inputs:
        partitions[(r[2], r[3])].append(r)
    streams = [sorted(records, key=lambda r: r[4]) for records in partitions.values()]
    ordered = heapq.merge(*streams, key=lambda r: (r[0], r[1], r[3]))
    engine.apply(Event(name, partition, offset, value, timestamp=ms / 1000)
                 for ms, _, name, partition, offset, value in ordered)
    return {name: table.data for name, table in tables.items()}, published


def differences(a: Any, b: Any, path: str = "") -> Optional[str]:
    """Where two records differ (floats to 1e-9 relative: sums may add in another order), or None."""
    if isinstance(a, float) and isinstance(b, float):
        return None if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(set(a) ^ set(b))} differ"
        for k in a:
            if (diff := differences(a[k], b[k], f"{path}.{k}")) is not None:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if (diff := differences(x, y, f"{path}[{i}]")) is not None:
                return diff
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


async def table_mismatches(topics: Topics, instruments: tuple[str, ...]) -> dict[str, list[str]]:
    """Per analytics table, how its changelog differs from a recomputation over the inputs
    (an empty list: equal). ``analytics_progress`` is compared on its minute only: which
    snapshots are out depends on how the topics interleaved; the minute does not."""
    expected, _ = recompute(await topics.inputs(), instruments)
    out: dict[str, list[str]] = {}
    for spec in TABLES:
        live, _ = await topics.changelog(spec.name, spec.state)
        want = expected[spec.name]
        if spec.name == "analytics_progress":
            live = {k: v["pnl_minute"] for k, v in live.items()}
            want = {k: v["pnl_minute"] for k, v in want.items()}
        problems = [f"keys only in the changelog or only in the recomputation: {sorted(map(str, set(live) ^ set(want)))[:5]}"] \
            if set(live) != set(want) else []
        for key in set(live) & set(want):
            if (diff := differences(live[key], want[key])) is not None:
                # Which events each has applied says whether one was lost or applied twice.
                applied = "" if not isinstance(live[key], dict) or "offsets" not in live[key] else \
                    f" (offsets applied: live {live[key]['offsets']}, recomputed {want[key]['offsets']})"
                problems.append(f"[{key}]{diff}{applied}")
        out[spec.name] = problems
    return out
