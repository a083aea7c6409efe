"""What watches a worker from outside: Debian's headless Chromium (through chromedriver and the
pinned selenium) and Debian's Prometheus, each a child process on loopback.

Used by the inspector and metrics tests (test_inspector.py, test_metrics.py) and by
benchmarks/bench_observers.py, which measures what they cost the quoting worker.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

from app.stack.process import Child, free_port, spawn

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def chromium(folder: Path, window: str = "1400,1000") -> Any:
    """A selenium driver on a fresh headless Chromium whose profile and driver log are in
    ``folder``. Every host but 127.0.0.1 fails to resolve: a page that reached out would break,
    and the request is in the performance log (capability ``goog:loggingPrefs``)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    assert not missing, f"{missing} missing: ./dev.sh installs Debian's chromium and chromium-driver"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    folder.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path given too, selenium fetches nothing
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={window}", f"--user-data-dir={folder / 'profile'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(folder / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    return driver


def quit_chromium(driver: Any, folder: Path) -> None:
    driver.quit()
    shutil.rmtree(folder / "profile", ignore_errors=True)


def get_json(port: int, path: str, timeout: float = 3.0) -> Optional[dict]:
    """GET ``path`` on a loopback port as JSON; None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return json.loads(response.read())
    except OSError:
        return None


class Prometheus:
    """Prometheus on a free loopback port scraping ``targets`` (host:port) every
    ``interval`` seconds, putting ``labels`` on every series (a stack's ``account``); its TSDB
    under ``folder``, removed by ``stop()``."""

    def __init__(self, folder: Path, *targets: str, interval: float = 1.0,
                 labels: Optional[dict[str, str]] = None) -> None:
        assert PROMETHEUS is not None, "no prometheus: ./dev.sh installs Debian's prometheus package"
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "prometheus.yml"
        listed = ", ".join(f"'{t}'" for t in targets)
        self.config.write_text(
            f"global:\n  scrape_interval: {interval:g}s\n  scrape_timeout: {interval:g}s\n"
            f"  evaluation_interval: {interval:g}s\n"
            "scrape_configs:\n  - job_name: cryptics\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: [{listed}]\n"
            + (f"        labels: {{{', '.join(f'{k}: {v!r}' for k, v in labels.items())}}}\n" if labels else ""))
        self.child: Optional[Child] = None

    def start(self) -> None:
        self.child = spawn("prometheus", [
            PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h", "--log.level=warn",
        ], log_path=self.folder / "prometheus.log", cwd=self.folder)

    def stop(self) -> None:
        if self.child is not None and self.child.alive():
            self.child.stop(timeout=15)
        shutil.rmtree(self.folder / "tsdb", ignore_errors=True)

    def api(self, path: str, **params: str) -> Optional[dict]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = get_json(self.port, f"/api/v1/{path}{query}")
        if answer is None or answer.get("status") != "success":
            return None
        return answer["data"]

    def query(self, expression: str) -> dict[tuple, float]:
        """An instant query's result: label set (without __name__, job, instance) → value."""
        data = self.api("query", query=expression)
        if data is None:
            return {}
        out = {}
        for item in data["result"]:
            labels = tuple(sorted((k, v) for k, v in item["metric"].items()
                                  if k not in ("__name__", "job", "instance")))
            out[labels] = float(item["value"][1])
        return out

    def targets(self) -> list[dict]:
        data = self.api("targets")
        return list(data["activeTargets"]) if data else []

    def target_up(self) -> bool:
        return any(t["health"] == "up" for t in self.targets())
