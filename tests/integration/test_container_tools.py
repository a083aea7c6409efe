"""The compose stack's Prometheus config, checked by Debian's promtool (the one ./dev.sh installs
for the metrics tests): a process, so here rather than with the other static checks of the
container files (tests/unit/test_containers.py).

Skipped only when promtool is missing, as tests/integration/test_metrics.py is.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from .conftest import ROOT
from .observers import PROMTOOL

CONFIG = ROOT / "grafana" / "prometheus" / "prometheus.yml"

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="no promtool: ./dev.sh installs Debian's prometheus")


def _check(path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_prometheus_config_of_the_compose_stack():
    result = _check(CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_refuses_a_broken_copy_of_it(tmp_path):
    """The check can fail: the same config with a discovery type Prometheus does not know."""
    broken = tmp_path / "prometheus.yml"
    shutil.copy(CONFIG, broken)
    text = broken.read_text()
    assert "type: A" in text
    broken.write_text(text.replace("type: A", "type: CNAME", 1))
    assert _check(broken).returncode != 0


def test_the_prometheus_image_is_the_version_the_tests_run():
    """The compose stack's Prometheus is the release the metrics tests scrape with (Debian's
    prometheus, whose promtool this is): the same major and minor version."""
    version = subprocess.run([PROMTOOL, "--version"], capture_output=True, text=True, timeout=60)
    tested = re.search(r"version (\d+)\.(\d+)\.", version.stdout + version.stderr)
    assert tested, version.stdout + version.stderr
    image = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]["image"]
    pinned = re.fullmatch(r"prom/prometheus:v(\d+)\.(\d+)\.\d+", image)
    assert pinned, image
    assert pinned.groups() == tested.groups(), f"{image} against promtool {tested.group(0)}"
