"""Finding and loading the Avro schemas in ``schemas/<record>/vN.avsc``."""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

SCHEMA_ROOT = Path(__file__).resolve().parent.parent / "schemas"
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def versions(record: str) -> list[int]:
    """The version numbers present for ``record``, oldest first."""
    folder = SCHEMA_ROOT / record
    found = sorted(int(m.group(1)) for p in folder.glob("v*.avsc") if (m := _VERSION_FILE.match(p.name)))
    if not found:
        raise FileNotFoundError(f"no schema versions for record {record!r} in {folder}")
    return found


@functools.lru_cache(maxsize=None)
def load(record: str, version: int | None = None) -> Any:
    """The schema of ``record`` (JSON), the newest version unless one is named."""
    version = version if version is not None else versions(record)[-1]
    path = SCHEMA_ROOT / record / f"v{version}.avsc"
    return json.loads(path.read_text())
