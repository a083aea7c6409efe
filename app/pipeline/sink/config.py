"""The sink's settings: a frozen config next to the code it configures, as the venue's.

``Settings.from_env`` (app/settings.py, the one settings module) fills it from
``CRYPTICS_SINK_<FIELD>`` variables with the same parser as every other setting.

| field | variable | default | meaning |
|---|---|---|---|
| batch_size | CRYPTICS_SINK_BATCH_SIZE | 5000 | a batch is flushed when it holds this many records... |
| batch_age | CRYPTICS_SINK_BATCH_AGE | 0.5 | ...or when this many seconds passed since the last flush |
| retry_initial | CRYPTICS_SINK_RETRY_INITIAL | 0.2 | first pause (s) after a connection error; doubles each retry |
| retry_max | CRYPTICS_SINK_RETRY_MAX | 5.0 | longest pause (s) between retries; retries never stop |
| connect_timeout | CRYPTICS_SINK_CONNECT_TIMEOUT | 5.0 | seconds to wait for a database connection before retrying |
| max_wait | CRYPTICS_SINK_MAX_WAIT | 600 | Kafka's max poll interval: a consumer that waited longer for the database leaves its group, and rejoins once a batch is through (nothing is lost either way) |
| write_mode | CRYPTICS_SINK_WRITE_MODE | copy | copy (binary COPY into a temporary table) or unnest (INSERT … SELECT unnest(...), for servers without COPY such as PGlite) |
"""
from __future__ import annotations

from dataclasses import dataclass

from app.config import SettingError

WRITE_MODES = ("copy", "unnest")


@dataclass(frozen=True)
class SinkConfig:
    #: Records per flush at most. At 5,000 a flush takes ~0.1 s and the per-transaction
    #: cost is amortised (benchmarks/bench_sink/, part 1; figures in docs/benchmarks.md). At live
    #: rates batches flush on age long before they fill.
    batch_size: int = 5000
    #: Seconds a batch may wait for more records: the upper bound that batching adds to
    #: the received → persisted latency when traffic is light.
    batch_age: float = 0.5
    retry_initial: float = 0.2
    retry_max: float = 5.0
    connect_timeout: float = 5.0
    #: Kafka's max poll interval: while the database is away the consumer asks for nothing
    #: (backpressure); longer than this and it leaves its group until its batch is through.
    max_wait: float = 600.0
    write_mode: str = "copy"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise SettingError("batch_size", f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_age <= 0:
            raise SettingError("batch_age", f"batch_age must be > 0, got {self.batch_age}")
        if not 0 < self.retry_initial <= self.retry_max:
            raise SettingError("retry_initial", "retry_initial must be > 0 and <= retry_max")
        if self.connect_timeout <= 0:
            raise SettingError("connect_timeout", f"connect_timeout must be > 0, got {self.connect_timeout}")
        if self.max_wait <= 0:
            raise SettingError("max_wait", f"max_wait must be > 0, got {self.max_wait}")
        if self.write_mode not in WRITE_MODES:
            raise SettingError("write_mode", f"write_mode must be one of {', '.join(WRITE_MODES)}, got {self.write_mode!r}")
