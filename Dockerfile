# The CrypticsLab image of the distributed stack (docker-compose.yml, docs/deployment.md): the
# workers, the simulated venue and the one-shot jobs all run it. (`cryptics up` needs no container.)
#
# Three stages. `deps` builds the wheels of the dependencies from setup.cfg alone, so an edit of
# the code does not rebuild them; `build` builds the project's wheel, whose Cython extensions
# must compile; the runtime stage installs those wheels and nothing else: no compiler, no
# source tree. Checked statically by tests/unit/test_containers.py.

# -- 1. the dependencies' wheels --------------------------------------------------------------
FROM python:3.11-slim-bookworm AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The dependency list only (setup.cfg's install_requires): nothing else invalidates this layer.
COPY setup.cfg ./
RUN mkdir -p /wheels/deps \
 && python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'])" \
      > /wheels/deps/requirements.txt \
 && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r /wheels/deps/requirements.txt

# -- 2. the project's wheel, its Cython extensions compiled with gcc ---------------------------
FROM deps AS build
COPY setup.py pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY models ./models
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/project .
# setup.py marks the extensions optional, so that a machine without a compiler still installs
# with the pure-Python twins; an image must not ship them silently. Imported from / (not from
# the source tree) after installing the wheel: this fails unless the wheel carries both.
RUN pip install --no-cache-dir --no-index --find-links /wheels/deps /wheels/project/*.whl \
 && cd / && python -c "import app.trading._quote, app.trading._ticks"

# -- 3. the runtime image: the wheels, installed; nothing to compile with ---------------------
FROM python:3.11-slim-bookworm AS runtime
# A fixed UID and GID: the compose volumes are made with this owner, and secret files are
# made readable to it (docs/deployment.md#secrets-to-create).
RUN groupadd --system --gid 10001 cryptics \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/cryptics \
      --shell /usr/sbin/nologin cryptics
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN python -m venv /opt/venv
# The dependencies first (their own layer, kept while only the code changes), then the project.
# The wheels are mounted from the build stages, never copied into a layer of this image.
RUN --mount=type=bind,from=deps,source=/wheels/deps,target=/wheels/deps \
    pip install --no-cache-dir --no-index --find-links /wheels/deps -r /wheels/deps/requirements.txt
RUN --mount=type=bind,from=build,source=/wheels/project,target=/wheels/project \
    pip install --no-cache-dir --no-index --no-deps /wheels/project/*.whl
# The Avro schemas and the migrations are no part of the wheel: the code finds them in the
# folder that holds its packages (models/schemas.py SCHEMA_ROOT, app/stack/migrate.py
# MIGRATIONS_DIR), which is site-packages here.
COPY schemas /opt/venv/lib/python3.11/site-packages/schemas
COPY timescale /opt/venv/lib/python3.11/site-packages/timescale
# What ships: the compiled modules (not their twins), the schemas and the migrations.
RUN cd / && python -c "from app.trading import quote, ticks; assert quote.IMPLEMENTATION == ticks.IMPLEMENTATION == 'cython'; from models.schemas import load; load('heartbeat'); from app.stack.migrate import discover; assert discover()"

# The state folder, and the mount points of the compose volumes: a named volume starts with
# the owner and mode of the folder it is mounted on.
RUN mkdir -p /var/lib/cryptics/state /var/lib/cryptics/venue-key /var/lib/cryptics/trusted-keys /var/lib/cryptics/pgpass \
 && chown -R 10001:10001 /var/lib/cryptics \
 && chmod 0700 /var/lib/cryptics/venue-key /var/lib/cryptics/pgpass
WORKDIR /var/lib/cryptics
USER 10001:10001

ENV CRYPTICS_STATE_DIR=/var/lib/cryptics/state \
    CRYPTICS_WEB_HOST=0.0.0.0
EXPOSE 6066
# The worker answers GET /heartbeat/ once its Faust app and web server run (slim images have
# no curl: Python's urllib asks).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/heartbeat/' % (os.environ.get('CRYPTICS_WEB_PORT') or '6066'), timeout=4)"]
CMD ["cryptics", "worker"]
