"""What the parts of the order gateway share: one ``GatewayContext`` per ``OrderGateway``.

It holds the client, the params, the clock, the rate buckets of the current venue session
(``OrderGateway`` makes new ones with each session; the modes spend their tokens), the
counters (``stats``, the gateway's public ones), the agent's callbacks, the tasks that await
the venue's answers (``OrderGateway.wait_idle`` waits for them), and the warnings logged only
once. The tracker and both modes get it; none of them owns it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

from app.exchange.client import ThalexClient
from app.exchange.rate_limit import TokenBucket
from app.gateway.params import GatewayParams

log = logging.getLogger(__name__)

Callback = Optional[Callable[[Any], Any]]


class GatewayContext:
    """The client, params, clock, buckets, stats, callbacks and request tasks of one gateway."""

    def __init__(self, client: ThalexClient, params: GatewayParams, clock: Callable[[], float],
                 stats: dict[str, Any], order_bucket: TokenBucket, cancel_bucket: TokenBucket, *,
                 on_ack: Callback = None, on_fill: Callback = None, on_requote: Callback = None) -> None:
        self.client = client
        self.params = params
        self.clock = clock
        self.stats = stats
        #: Inserts, amends and mass quotes share one venue limit; cancels have their own.
        self.order_bucket = order_bucket
        self.cancel_bucket = cancel_bucket
        self.on_ack = on_ack
        self.on_fill = on_fill
        self.on_requote = on_requote
        #: Set by OrderGateway.close(): nothing new goes out.
        self.closed = False
        self.tasks: set[asyncio.Task] = set()
        self._logged: set[tuple] = set()

    def track(self, awaiting: Any) -> None:
        """Run ``awaiting`` (a request's answer) as a task that wait_idle() waits for."""
        task = asyncio.get_running_loop().create_task(awaiting)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def count_error(self, code: int, message: str) -> None:
        """A venue error reply: counted by code, logged once per code."""
        self.stats["errors_by_code"][code] += 1
        self.log_once(("error", code), "%s (error %d, logged once; counted in stats['errors_by_code'])",
                      message, code)

    def log_once(self, key: tuple, message: str, *args: Any) -> None:
        """A warning the first time for ``key``, debug after: a flood of one problem logs once."""
        if key in self._logged:
            log.debug(message, *args)
        else:
            self._logged.add(key)
            log.warning(message, *args)

    def emit(self, callback: Callback, record: Any) -> None:
        """Hand ``record`` to one of the agent's callbacks; its failure is counted and logged."""
        if callback is None:
            return
        try:
            callback(record)
        except Exception:  # the agent's producer failing must not corrupt the order state
            self.stats["callback_errors"] += 1
            log.exception("the gateway's %s callback failed", type(record).__name__)
