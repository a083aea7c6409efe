# The CrypticsLab worker image, for the production stack in docker-compose.yml.
# (The embedded stack of `cryptics up` needs no container.)
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/cryptics
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY models ./models
COPY schemas ./schemas
COPY timescale ./timescale
RUN pip install --no-cache-dir -e . \
 && useradd --system --no-create-home cryptics
USER cryptics

ENV CRYPTICS_STATE_DIR=/tmp/cryptics \
    CRYPTICS_WEB_HOST=0.0.0.0
EXPOSE 6066
CMD ["cryptics", "worker"]
